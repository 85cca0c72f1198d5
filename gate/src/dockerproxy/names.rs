//! Names as the Docker daemon normalises them: host paths of bind mounts and image
//! references. Pure.

/// `/a/b` for an absolute path without `.`, `..` or empty components (a trailing `/` is
/// dropped); `None` for anything else.
pub fn normalize_host_path(path: &str) -> Option<String> {
    let rest = path.strip_prefix('/')?;
    let rest = rest.strip_suffix('/').unwrap_or(rest);
    if rest.is_empty() {
        return Some("/".to_owned());
    }
    let ok = rest
        .split('/')
        .all(|c| !c.is_empty() && c != "." && c != ".." && !c.chars().any(char::is_control));
    ok.then(|| format!("/{rest}"))
}

/// The repository an image reference names, normalised as the daemon does:
/// `debian:bookworm` → `docker.io/library/debian`, `ghcr.io/a/b@sha256:..` → `ghcr.io/a/b`.
/// `None` for an empty reference.
pub fn repository_of(reference: &str) -> Option<String> {
    let reference = reference.trim();
    let name = reference.split('@').next().unwrap_or("");
    let name = match name.rfind(':') {
        Some(i) if !name[i..].contains('/') => &name[..i],
        _ => name,
    };
    if name.is_empty() {
        return None;
    }
    let name = name.to_ascii_lowercase();
    let (domain, path) = match name.split_once('/') {
        Some((first, rest))
            if first.contains('.') || first.contains(':') || first == "localhost" =>
        {
            (first.to_owned(), rest.to_owned())
        }
        _ => ("docker.io".to_owned(), name.clone()),
    };
    let domain = if domain == "index.docker.io" {
        "docker.io".to_owned()
    } else {
        domain
    };
    let path = if domain == "docker.io" && !path.contains('/') {
        format!("library/{path}")
    } else {
        path
    };
    Some(format!("{domain}/{path}"))
}
