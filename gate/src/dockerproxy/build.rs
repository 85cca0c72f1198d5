//! What a build may do: the daemon's (legacy) builder runs `ADD <url>` and the `ONBUILD`
//! triggers of base images itself, from the host's network, where it reaches the host's
//! loopback services and a cloud's metadata endpoint. So the build context (a tar stream) is
//! read as it passes through: the Dockerfile in it may not `ADD` from a URL, use variables in
//! `ADD` or `FROM`, or declare `ONBUILD`; and its base images (returned by
//! [`ContextScanner::finish`]) must be local images without `ONBUILD` triggers, which the
//! server checks before the last bytes of the context go out.
//!
//! Pure: bytes in, a verdict out. The tar reading is strict where Go's `archive/tar` (the
//! daemon's reader) could read something else: bad checksums, base-256 sizes, sparse files and
//! global headers are refused, and so is a Dockerfile reached through a link.

use super::refusal::Refusal;

/// Largest Dockerfile the scanner reads.
const MAX_DOCKERFILE: usize = 1024 * 1024;
/// Largest PAX or GNU long-name record.
const MAX_META: usize = 64 * 1024;
const BLOCK: usize = 512;

fn deny(message: impl Into<String>) -> Refusal {
    Refusal::deny("build_context", message)
}

/// The Dockerfile names the daemon may read: the `dockerfile` parameter, or `Dockerfile` and
/// its lower-case fallback.
pub fn dockerfile_names(param: Option<&str>) -> Result<Vec<String>, Refusal> {
    match param.filter(|p| !p.is_empty()) {
        None => Ok(vec!["Dockerfile".to_owned(), "dockerfile".to_owned()]),
        Some(path) => {
            if path.starts_with('/') {
                return Err(deny(
                    "the dockerfile parameter must be a path inside the context",
                ));
            }
            let clean = clean_name(path).ok_or_else(|| {
                deny("the dockerfile parameter must be a path inside the context")
            })?;
            Ok(vec![clean])
        }
    }
}

/// A tar entry name as the daemon places it in the context: `./a//b/` → `a/b`; `None` when
/// it climbs out (`..` above the root).
fn clean_name(name: &str) -> Option<String> {
    let mut parts: Vec<&str> = Vec::new();
    for part in name.split('/') {
        match part {
            "" | "." => {}
            ".." => {
                parts.pop()?;
            }
            other => parts.push(other),
        }
    }
    Some(parts.join("/"))
}

#[derive(Debug)]
enum State {
    /// Reading a 512-byte header.
    Header,
    /// Reading `remaining` bytes of an entry's data (plus `padding`).
    Data {
        remaining: u64,
        padding: usize,
        sink: Sink,
    },
    /// Two zero blocks were seen.
    End,
}

#[derive(Debug)]
enum Sink {
    Skip,
    Dockerfile,
    Pax,
    LongName,
    LongLink,
}

/// Reads a build context as it streams past.
#[derive(Debug)]
pub struct ContextScanner {
    names: Vec<String>,
    state: State,
    buffer: Vec<u8>,
    captured: Vec<u8>,
    started: bool,
    zero_blocks: usize,
    /// Overrides from a PAX header or GNU long-name entry for the next entry.
    next_path: Option<String>,
    next_size: Option<u64>,
    /// Every entry that is a link or not a regular file, by cleaned name.
    links: Vec<String>,
    /// Base images of every Dockerfile seen.
    images: Vec<String>,
    dockerfiles: usize,
}

impl ContextScanner {
    /// A scanner looking for `names` (see [`dockerfile_names`]).
    pub fn new(names: Vec<String>) -> ContextScanner {
        ContextScanner {
            names,
            state: State::Header,
            buffer: Vec::new(),
            captured: Vec::new(),
            started: false,
            zero_blocks: 0,
            next_path: None,
            next_size: None,
            links: Vec::new(),
            images: Vec::new(),
            dockerfiles: 0,
        }
    }

    /// Feeds the next bytes of the context.
    pub fn push(&mut self, mut bytes: &[u8]) -> Result<(), Refusal> {
        if !self.started && !bytes.is_empty() {
            self.started = true;
            let head = &bytes[..bytes.len().min(6)];
            let compressed = head.starts_with(&[0x1f, 0x8b])
                || head.starts_with(b"BZh")
                || head.starts_with(&[0xfd, b'7', b'z', b'X', b'Z', 0x00])
                || head.starts_with(&[0x28, 0xb5, 0x2f, 0xfd]);
            if compressed {
                return Err(deny(
                    "compressed build contexts are not accepted (build without --compress)",
                ));
            }
        }
        while !bytes.is_empty() {
            match &mut self.state {
                State::End => {
                    // Whatever follows the end blocks is ignored by the daemon too.
                    return Ok(());
                }
                State::Header => {
                    let want = BLOCK - self.buffer.len();
                    let take = want.min(bytes.len());
                    self.buffer.extend_from_slice(&bytes[..take]);
                    bytes = &bytes[take..];
                    if self.buffer.len() == BLOCK {
                        let block = std::mem::take(&mut self.buffer);
                        self.header(&block)?;
                    }
                }
                State::Data {
                    remaining,
                    padding,
                    sink,
                } => {
                    if *remaining > 0 {
                        let take = usize::try_from(*remaining)
                            .unwrap_or(usize::MAX)
                            .min(bytes.len());
                        match sink {
                            Sink::Skip => {}
                            Sink::Dockerfile => {
                                if self.captured.len() + take > MAX_DOCKERFILE {
                                    return Err(deny("the Dockerfile is over 1 MiB"));
                                }
                                self.captured.extend_from_slice(&bytes[..take]);
                            }
                            Sink::Pax | Sink::LongName | Sink::LongLink => {
                                if self.captured.len() + take > MAX_META {
                                    return Err(deny("a tar header record is too long"));
                                }
                                self.captured.extend_from_slice(&bytes[..take]);
                            }
                        }
                        *remaining -= take as u64;
                        bytes = &bytes[take..];
                        if *remaining > 0 {
                            continue;
                        }
                    }
                    let skip = (*padding).min(bytes.len());
                    *padding -= skip;
                    bytes = &bytes[skip..];
                    if *padding == 0 {
                        let State::Data { sink, .. } =
                            std::mem::replace(&mut self.state, State::Header)
                        else {
                            unreachable!("matched above");
                        };
                        self.entry_done(sink)?;
                    }
                }
            }
        }
        Ok(())
    }

    fn header(&mut self, block: &[u8]) -> Result<(), Refusal> {
        if block.iter().all(|b| *b == 0) {
            self.zero_blocks += 1;
            if self.zero_blocks == 2 {
                self.state = State::End;
            }
            return Ok(());
        }
        if self.zero_blocks > 0 {
            return Err(deny("malformed build context (data after an end block)"));
        }
        check_checksum(block)?;
        let kind = block[156];
        let size_field = &block[124..136];
        if size_field[0] & 0x80 != 0 {
            return Err(deny("build context entries over 8 GiB are not accepted"));
        }
        let size = self
            .next_size
            .take()
            .map_or_else(|| parse_octal(size_field), Ok)?;
        let ustar = &block[257..262] == b"ustar";
        let mut name = field_text(&block[0..100]);
        if ustar {
            let prefix = field_text(&block[345..500]);
            if !prefix.is_empty() {
                name = format!("{prefix}/{name}");
            }
        }
        let name = self.next_path.take().unwrap_or(name);
        let padding = (BLOCK - (size % BLOCK as u64) as usize) % BLOCK;
        let sink = match kind {
            b'x' => Sink::Pax,
            b'L' => Sink::LongName,
            b'K' => Sink::LongLink,
            b'g' => {
                return Err(deny(
                    "global tar headers are not accepted in a build context",
                ));
            }
            b'S' => return Err(deny("sparse files are not accepted in a build context")),
            b'0' | 0 | b'7' => {
                let clean = clean_name(&name).ok_or_else(|| {
                    deny(format!("build context entry `{name}` leaves the context"))
                })?;
                if self.names.contains(&clean) {
                    self.captured.clear();
                    Sink::Dockerfile
                } else {
                    Sink::Skip
                }
            }
            _ => {
                // Directories, links and devices: a link must not lead to the Dockerfile.
                if let Some(clean) = clean_name(&name)
                    && kind != b'5'
                {
                    self.links.push(clean);
                }
                Sink::Skip
            }
        };
        self.state = State::Data {
            remaining: size,
            padding,
            sink,
        };
        if size == 0 {
            // Zero-length entries finish at once (no data blocks follow).
            let State::Data { sink, .. } = std::mem::replace(&mut self.state, State::Header) else {
                unreachable!("set above");
            };
            self.entry_done(sink)?;
        }
        Ok(())
    }

    fn entry_done(&mut self, sink: Sink) -> Result<(), Refusal> {
        let captured = std::mem::take(&mut self.captured);
        match sink {
            Sink::Skip => {}
            Sink::Dockerfile => {
                self.dockerfiles += 1;
                let text = String::from_utf8_lossy(&captured);
                let images = scan_dockerfile(&text)?;
                self.images.extend(images);
            }
            Sink::Pax => {
                for (key, value) in parse_pax(&captured)? {
                    match key.as_str() {
                        "path" => self.next_path = Some(value),
                        "size" => {
                            self.next_size = Some(
                                value
                                    .parse()
                                    .map_err(|_| deny("malformed size in a PAX header"))?,
                            );
                        }
                        k if k.starts_with("GNU.sparse") => {
                            return Err(deny("sparse files are not accepted in a build context"));
                        }
                        _ => {}
                    }
                }
            }
            Sink::LongName => {
                self.next_path = Some(field_text(&captured));
            }
            Sink::LongLink => {}
        }
        Ok(())
    }

    /// The context ended: the base images to check, or why the build is refused.
    ///
    /// Like Go's reader, an archive may end at a header boundary or anywhere in the padding
    /// after an entry's data, without end blocks (the docker CLI sends `-f -` contexts so).
    pub fn finish(mut self) -> Result<Vec<String>, Refusal> {
        match std::mem::replace(&mut self.state, State::End) {
            State::End => {}
            State::Header if self.buffer.is_empty() => {}
            State::Data {
                remaining: 0, sink, ..
            } => self.entry_done(sink)?,
            _ => return Err(deny("the build context ends in the middle of an entry")),
        }
        for link in &self.links {
            let through = self
                .names
                .iter()
                .any(|name| name == link || name.starts_with(&format!("{link}/")));
            if through {
                return Err(deny(format!(
                    "the Dockerfile is reached through the link `{link}`; send it as a regular file"
                )));
            }
        }
        if self.dockerfiles == 0 {
            return Err(deny(format!(
                "no Dockerfile ({}) in the build context",
                self.names.join(" or ")
            )));
        }
        let mut images = self.images;
        images.sort();
        images.dedup();
        Ok(images)
    }
}

fn field_text(field: &[u8]) -> String {
    let end = field.iter().position(|b| *b == 0).unwrap_or(field.len());
    String::from_utf8_lossy(&field[..end]).into_owned()
}

fn parse_octal(field: &[u8]) -> Result<u64, Refusal> {
    let text = field_text(field);
    let text = text.trim_matches(|c: char| c == ' ' || c == '\0');
    if text.is_empty() {
        return Ok(0);
    }
    u64::from_str_radix(text, 8).map_err(|_| deny("malformed tar header (size)"))
}

/// Go accepts the unsigned and the signed sum of the header, with the checksum field as
/// spaces.
fn check_checksum(block: &[u8]) -> Result<(), Refusal> {
    let stored = parse_octal(&block[148..156])?;
    let mut unsigned: u64 = 0;
    let mut signed: i64 = 0;
    for (i, byte) in block.iter().enumerate() {
        let b = if (148..156).contains(&i) { b' ' } else { *byte };
        unsigned += u64::from(b);
        signed += i64::from(b as i8);
    }
    if stored == unsigned || i64::try_from(stored).is_ok_and(|s| s == signed) {
        Ok(())
    } else {
        Err(deny("malformed build context (not a tar archive)"))
    }
}

/// PAX records: `LEN key=value\n`.
fn parse_pax(data: &[u8]) -> Result<Vec<(String, String)>, Refusal> {
    let mut out = Vec::new();
    let mut rest = data;
    while !rest.is_empty() {
        let space = rest
            .iter()
            .position(|b| *b == b' ')
            .ok_or_else(|| deny("malformed PAX header"))?;
        let len: usize = std::str::from_utf8(&rest[..space])
            .ok()
            .and_then(|t| t.parse().ok())
            .filter(|l| *l > space + 1 && *l <= rest.len())
            .ok_or_else(|| deny("malformed PAX header"))?;
        let record = &rest[space + 1..len];
        let record = record
            .strip_suffix(b"\n")
            .ok_or_else(|| deny("malformed PAX header"))?;
        let text = String::from_utf8_lossy(record);
        let (key, value) = text
            .split_once('=')
            .ok_or_else(|| deny("malformed PAX header"))?;
        out.push((key.to_owned(), value.to_owned()));
        rest = &rest[len..];
    }
    Ok(out)
}

/// Checks a Dockerfile as the legacy builder parses it (parser directives, `escape`,
/// continuation lines, comments) and returns its external base images.
pub fn scan_dockerfile(text: &str) -> Result<Vec<String>, Refusal> {
    let text = text.strip_prefix('\u{feff}').unwrap_or(text);
    let mut escape = '\\';
    let mut lines = text.lines().peekable();
    // Parser directives: `# key=value` lines at the very top.
    while let Some(line) = lines.peek() {
        let trimmed = line.trim();
        let Some(directive) = trimmed.strip_prefix('#') else {
            break;
        };
        let Some((key, value)) = directive.split_once('=') else {
            break;
        };
        let key = key.trim();
        if key.is_empty() || !key.chars().all(|c| c.is_ascii_alphanumeric()) {
            break;
        }
        if key.eq_ignore_ascii_case("escape") {
            escape = match value.trim() {
                "`" => '`',
                "\\" => '\\',
                other => return Err(deny(format!("unknown escape directive `{other}`"))),
            };
        }
        lines.next();
    }
    let mut stages: Vec<String> = Vec::new();
    let mut images: Vec<String> = Vec::new();
    let mut logical = String::new();
    for line in lines {
        let trimmed = line.trim_start();
        if trimmed.starts_with('#') || (trimmed.trim().is_empty() && !logical.is_empty()) {
            continue;
        }
        let end_trimmed = line.trim_end_matches([' ', '\t']);
        if let Some(body) = end_trimmed.strip_suffix(escape) {
            logical.push_str(body);
            continue;
        }
        logical.push_str(line);
        let instruction = std::mem::take(&mut logical);
        check_instruction(&instruction, &mut stages, &mut images)?;
    }
    if !logical.trim().is_empty() {
        check_instruction(&logical, &mut stages, &mut images)?;
    }
    Ok(images)
}

fn check_instruction(
    line: &str,
    stages: &mut Vec<String>,
    images: &mut Vec<String>,
) -> Result<(), Refusal> {
    let line = line.trim();
    if line.is_empty() {
        return Ok(());
    }
    let (keyword, rest) = line
        .split_once(|c: char| c.is_whitespace())
        .unwrap_or((line, ""));
    let literal = |word: &str| !word.contains(['$', '\\', '`', '\'', '"']);
    match keyword.to_ascii_uppercase().as_str() {
        "ONBUILD" => Err(deny(
            "ONBUILD is not accepted: its triggers would run ADD from the host's network in later builds",
        )),
        "ADD" => {
            let words = instruction_words(rest);
            for word in words.iter().filter(|w| !w.starts_with("--")) {
                if word.contains("://") || word.starts_with("git@") || !literal(word) {
                    return Err(deny(format!(
                        "ADD `{word}`: the daemon would fetch it from the host's network; download it in a RUN step (or COPY a local file), without variables"
                    )));
                }
            }
            Ok(())
        }
        "FROM" => {
            let words: Vec<&str> = rest
                .split_whitespace()
                .filter(|w| !w.starts_with("--"))
                .collect();
            let Some(image) = words.first() else {
                return Err(deny("FROM without an image"));
            };
            if !literal(image) {
                return Err(deny(format!(
                    "FROM `{image}`: base images must be written out, without variables"
                )));
            }
            let lower = image.to_ascii_lowercase();
            if lower != "scratch" && !stages.contains(&lower) {
                images.push((*image).to_owned());
            }
            if words.len() >= 3 && words[1].eq_ignore_ascii_case("as") {
                stages.push(words[2].to_ascii_lowercase());
            }
            Ok(())
        }
        _ => Ok(()),
    }
}

/// An instruction's arguments: a JSON array, or words split on whitespace.
fn instruction_words(rest: &str) -> Vec<String> {
    let rest = rest.trim();
    if rest.starts_with('[')
        && let Ok(words) = serde_json::from_str::<Vec<String>>(rest)
    {
        return words;
    }
    rest.split_whitespace().map(str::to_owned).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn tar(entries: &[(&str, &[u8])]) -> Vec<u8> {
        let owned: Vec<(String, Vec<u8>)> = entries
            .iter()
            .map(|(name, data)| ((*name).to_owned(), data.to_vec()))
            .collect();
        write_tar(&owned)
    }

    /// A minimal ustar writer (regular files; `name -> target` for symlinks), with long names
    /// through PAX as Go writes them.
    fn write_tar(entries: &[(String, Vec<u8>)]) -> Vec<u8> {
        let mut out = Vec::new();
        for (name, data) in entries {
            let (name, link) = match name.split_once(" -> ") {
                Some((n, l)) => (n.to_owned(), Some(l.to_owned())),
                None => (name.clone(), None),
            };
            if name.len() > 99 {
                let record = {
                    let body = format!("path={name}\n");
                    let mut len = body.len() + 3;
                    loop {
                        let candidate = format!("{len} {body}");
                        if candidate.len() == len {
                            break candidate;
                        }
                        len = candidate.len();
                    }
                };
                out.extend(header_block("PaxHeaders/x", record.len(), b'x', None));
                out.extend(pad(record.into_bytes()));
            }
            let short: String = name.chars().take(99).collect();
            let kind = if link.is_some() { b'2' } else { b'0' };
            let size = if link.is_some() { 0 } else { data.len() };
            out.extend(header_block(&short, size, kind, link.as_deref()));
            if link.is_none() {
                out.extend(pad(data.clone()));
            }
        }
        out.extend([0u8; 1024]);
        out
    }

    fn pad(mut data: Vec<u8>) -> Vec<u8> {
        while !data.len().is_multiple_of(BLOCK) {
            data.push(0);
        }
        data
    }

    fn header_block(name: &str, size: usize, kind: u8, link: Option<&str>) -> Vec<u8> {
        let mut block = vec![0u8; BLOCK];
        block[..name.len()].copy_from_slice(name.as_bytes());
        block[100..107].copy_from_slice(b"0000644");
        block[124..135].copy_from_slice(format!("{size:011o}").as_bytes());
        block[136..147].copy_from_slice(b"00000000000");
        block[156] = kind;
        if let Some(link) = link {
            block[157..157 + link.len()].copy_from_slice(link.as_bytes());
        }
        block[257..263].copy_from_slice(b"ustar\0");
        block[263..265].copy_from_slice(b"00");
        block[148..156].copy_from_slice(b"        ");
        let sum: u32 = block.iter().map(|b| u32::from(*b)).sum();
        block[148..155].copy_from_slice(format!("{sum:06o}\0").as_bytes());
        block
    }

    fn scan(
        entries: &[(&str, &[u8])],
        param: Option<&str>,
        chunk: usize,
    ) -> Result<Vec<String>, String> {
        let data = tar(entries);
        let mut scanner = ContextScanner::new(dockerfile_names(param).map_err(|r| r.message)?);
        for piece in data.chunks(chunk) {
            scanner.push(piece).map_err(|r| r.message)?;
        }
        scanner.finish().map_err(|r| r.message)
    }

    #[test]
    fn base_images_come_back_and_risky_dockerfiles_are_refused() {
        let ok = b"# syntax=docker/dockerfile:1\nFROM debian:bookworm-slim AS base\nRUN apt-get update\nFROM base\nCOPY --from=base /x /y\nADD local.tar /opt/\nADD [\"a b\", \"/c\"]\nFROM scratch\n";
        for chunk in [1, 7, 512, 100_000] {
            assert_eq!(
                scan(
                    &[("src/main.c", b"int main;"), ("Dockerfile", ok)],
                    None,
                    chunk
                ),
                Ok(vec!["debian:bookworm-slim".to_owned()]),
                "chunk {chunk}"
            );
        }
        let refused: &[&[u8]] = &[
            b"FROM debian\nADD http://169.254.169.254/latest/meta-data /m\n",
            b"FROM debian\nADD --chown=1 https://127.0.0.1:8222/api /x\n",
            b"FROM debian\nADD [\"http://10.0.0.1/x\", \"/x\"]\n",
            b"FROM debian\nADD \\\n  http://x/y /z\n",
            b"FROM debian\nA\\\nDD http://x/y /z\n",
            b"FROM debian\nADD http:\\//x/y /z\n",
            b"FROM debian\nARG U=http://x\nADD $U /z\n",
            b"FROM debian\nADD ${U} /z\n",
            b"FROM debian\nADD git@github.com:o/r.git /r\n",
            b"# escape=`\nFROM debian\nADD `\n http://x/y /z\n",
            b"FROM debian\nONBUILD ADD http://x /y\n",
            b"FROM debian\non\\\nbuild RUN true\n",
            b"ARG BASE=debian\nFROM $BASE\n",
            b"FROM ${BASE:-debian}\n",
        ];
        for dockerfile in refused {
            assert!(
                scan(&[("Dockerfile", dockerfile)], None, 64).is_err(),
                "{}",
                String::from_utf8_lossy(dockerfile)
            );
        }
    }

    #[test]
    fn the_dockerfile_the_daemon_reads_is_the_one_checked() {
        let bad: &[u8] = b"FROM debian\nADD http://x /y\n";
        // Lower-case fallback, custom names, `./` prefixes, long (PAX) names, duplicates.
        assert!(scan(&[("dockerfile", bad)], None, 512).is_err());
        assert!(scan(&[("./Dockerfile", bad)], None, 512).is_err());
        assert!(
            scan(
                &[("build/Containerfile", bad)],
                Some("build/Containerfile"),
                512
            )
            .is_err()
        );
        assert!(
            scan(
                &[("build/Containerfile", bad)],
                Some("./build//Containerfile"),
                512
            )
            .is_err()
        );
        let long = format!("{}/Dockerfile", "d".repeat(120));
        assert!(scan(&[(&long, bad)], Some(&long), 512).is_err());
        assert!(
            scan(
                &[("Dockerfile", b"FROM debian\n"), ("Dockerfile", bad)],
                None,
                512
            )
            .is_err(),
            "a later entry of the same name replaces the first"
        );
        // A link to the Dockerfile, or a directory link on its way.
        assert!(scan(&[("other", bad), ("Dockerfile -> other", b"")], None, 512).is_err());
        assert!(
            scan(
                &[("real/Dockerfile", bad), ("d -> real", b"")],
                Some("d/Dockerfile"),
                512
            )
            .is_err()
        );
        // Nothing to check is refused too.
        assert!(scan(&[("README", b"x")], None, 512).is_err());
        assert!(dockerfile_names(Some("/etc/Dockerfile")).is_err());
        assert!(dockerfile_names(Some("../Dockerfile")).is_err());
        // Compressed contexts and non-tar bodies.
        let mut scanner = ContextScanner::new(dockerfile_names(None).unwrap());
        assert!(scanner.push(&[0x1f, 0x8b, 8, 0]).is_err());
        let mut scanner = ContextScanner::new(dockerfile_names(None).unwrap());
        let junk = vec![b'F'; 1024];
        assert!(scanner.push(&junk).is_err());
        // Truncated inside the data or a header; ending in the padding is the CLI's `-f -`.
        let data = tar(&[("Dockerfile", b"FROM debian\nADD http://x /y\n")]);
        for (cut, why) in [
            (300, "middle"),
            (512 + 10, "middle"),
            (700, "ADD"),
            (1024, "ADD"),
        ] {
            let mut scanner = ContextScanner::new(dockerfile_names(None).unwrap());
            let result = scanner.push(&data[..cut]).and_then(|()| scanner.finish());
            let message = result.expect_err("refused").message;
            assert!(message.contains(why), "cut {cut}: {message}");
        }
        let data = tar(&[("Dockerfile", b"FROM debian\n")]);
        let mut scanner = ContextScanner::new(dockerfile_names(None).unwrap());
        scanner.push(&data[..512 + 12]).unwrap();
        assert_eq!(scanner.finish().unwrap(), ["debian"]);
    }
}
