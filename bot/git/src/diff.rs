//! What changed between two commits, from `git diff --numstat -z`. Parsing is pure.

/// One file's line counts. `added` and `removed` are `None` for a binary file (git prints `-`).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct FileStat {
    pub path: String,
    /// The path before a rename, when git detected one.
    pub renamed_from: Option<String>,
    pub added: Option<u64>,
    pub removed: Option<u64>,
}

impl FileStat {
    pub fn is_binary(&self) -> bool {
        self.added.is_none() && self.removed.is_none()
    }
}

/// The files of a diff, in git's order.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct DiffStat {
    pub files: Vec<FileStat>,
}

impl DiffStat {
    /// Lines added over all text files.
    pub fn added(&self) -> u64 {
        self.files.iter().filter_map(|f| f.added).sum()
    }

    /// Lines removed over all text files.
    pub fn removed(&self) -> u64 {
        self.files.iter().filter_map(|f| f.removed).sum()
    }

    pub fn is_empty(&self) -> bool {
        self.files.is_empty()
    }
}

/// Parses `git diff --numstat -z`: `ADDED\tREMOVED\tPATH\0` per file, or, for a rename,
/// `ADDED\tREMOVED\t\0OLD\0NEW\0`. `Err` names the first record that does not fit.
pub fn parse_numstat(raw: &[u8]) -> Result<DiffStat, String> {
    let text = String::from_utf8_lossy(raw);
    let mut fields = text.split('\0');
    let mut files = Vec::new();
    while let Some(record) = fields.next() {
        if record.is_empty() {
            continue;
        }
        let mut parts = record.splitn(3, '\t');
        let (Some(added), Some(removed), Some(path)) = (parts.next(), parts.next(), parts.next())
        else {
            return Err(format!("no counts in {record:?}"));
        };
        let added = count(added).ok_or_else(|| format!("bad count in {record:?}"))?;
        let removed = count(removed).ok_or_else(|| format!("bad count in {record:?}"))?;
        let (path, renamed_from) = if path.is_empty() {
            let (Some(old), Some(new)) = (fields.next(), fields.next().filter(|p| !p.is_empty()))
            else {
                return Err(format!("rename without paths in {record:?}"));
            };
            (new.to_owned(), Some(old.to_owned()))
        } else {
            (path.to_owned(), None)
        };
        files.push(FileStat {
            path,
            renamed_from,
            added,
            removed,
        });
    }
    Ok(DiffStat { files })
}

/// A numstat count: digits, or `-` for a binary file.
fn count(field: &str) -> Option<Option<u64>> {
    if field == "-" {
        Some(None)
    } else {
        field.parse().ok().map(Some)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn file(path: &str, added: Option<u64>, removed: Option<u64>) -> FileStat {
        FileStat {
            path: path.into(),
            renamed_from: None,
            added,
            removed,
        }
    }

    #[test]
    fn parses_numstat() {
        let cases: &[(&[u8], Vec<FileStat>)] = &[
            (b"", vec![]),
            (
                b"3\t1\tsrc/main.rs\0",
                vec![file("src/main.rs", Some(3), Some(1))],
            ),
            (
                b"1\t0\ta b\tc.txt\0-\t-\timg.png\0",
                vec![
                    file("a b\tc.txt", Some(1), Some(0)),
                    file("img.png", None, None),
                ],
            ),
            (
                b"0\t0\t\0old name\0new\nname\0",
                vec![FileStat {
                    path: "new\nname".into(),
                    renamed_from: Some("old name".into()),
                    added: Some(0),
                    removed: Some(0),
                }],
            ),
        ];
        for (raw, expected) in cases {
            let stat = parse_numstat(raw).expect("parses");
            assert_eq!(&stat.files, expected, "{:?}", String::from_utf8_lossy(raw));
        }
    }

    #[test]
    fn totals_skip_binary_files() {
        let stat = parse_numstat(b"3\t1\ta\0-\t-\tb\x002\t5\tc\0").expect("parses");
        assert_eq!((stat.added(), stat.removed()), (5, 6));
        assert!(stat.files[1].is_binary());
    }

    #[test]
    fn rejects_what_is_not_numstat() {
        for raw in [&b"garbage\0"[..], b"x\t1\tp\0", b"1\t1\t\0only-old\0"] {
            assert!(
                parse_numstat(raw).is_err(),
                "{:?}",
                String::from_utf8_lossy(raw)
            );
        }
    }
}
