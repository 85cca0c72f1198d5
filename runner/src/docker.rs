//! Connecting to the Docker engine and asking it what it can do.

use bollard::Docker;

/// The Docker API version loop needs at least (Docker 20.10).
pub const MIN_API_VERSION: &str = "1.41";

#[derive(Debug, thiserror::Error)]
pub enum DockerError {
    #[error("cannot reach the Docker engine: {0}")]
    Unreachable(#[source] bollard::errors::Error),
    #[error("docker API call {call} failed: {source}")]
    Api {
        call: &'static str,
        #[source]
        source: bollard::errors::Error,
    },
}

/// What `loop doctor` reports about the engine.
#[derive(Debug, Clone)]
pub struct EngineInfo {
    pub version: String,
    pub api_version: String,
    pub runtimes: Vec<String>,
    pub storage_driver: String,
}

/// Connects through the local socket (or `DOCKER_HOST`) and negotiates the API version.
pub async fn connect() -> Result<Docker, DockerError> {
    let docker = Docker::connect_with_local_defaults().map_err(DockerError::Unreachable)?;
    let docker = docker
        .negotiate_version()
        .await
        .map_err(DockerError::Unreachable)?;
    docker.ping().await.map_err(DockerError::Unreachable)?;
    Ok(docker)
}

/// The host path of the local Docker socket loop's client uses (`DOCKER_HOST=unix://...`,
/// else `/var/run/docker.sock`), for the docker proxy to mount; `None` when `DOCKER_HOST` is
/// not a unix socket (a TCP or SSH engine cannot be mounted into a container).
pub fn local_socket_path(docker_host: Option<&str>) -> Option<std::path::PathBuf> {
    match docker_host.map(str::trim).filter(|h| !h.is_empty()) {
        None => Some(std::path::PathBuf::from("/var/run/docker.sock")),
        Some(host) => host
            .strip_prefix("unix://")
            .filter(|path| path.starts_with('/'))
            .map(std::path::PathBuf::from),
    }
}

/// Whether a failed Docker call never got an answer from the engine (connection refused or cut,
/// socket gone, timed out), as opposed to the engine answering with an error. A turn that fails
/// this way failed because of the engine, not the agent.
pub fn engine_unreachable(err: &bollard::errors::Error) -> bool {
    use bollard::errors::Error;
    matches!(
        err,
        Error::HyperLegacyError { .. }
            | Error::HyperResponseError { .. }
            | Error::IOError { .. }
            | Error::RequestTimeoutError
            | Error::SocketNotFoundError(_)
    )
}

/// Version, API version and runtimes of the engine.
pub async fn engine_info(docker: &Docker) -> Result<EngineInfo, DockerError> {
    let version = docker.version().await.map_err(|source| DockerError::Api {
        call: "version",
        source,
    })?;
    let info = docker.info().await.map_err(|source| DockerError::Api {
        call: "info",
        source,
    })?;
    let mut runtimes: Vec<String> = info
        .runtimes
        .map(|r| r.into_keys().collect())
        .unwrap_or_default();
    runtimes.sort();
    Ok(EngineInfo {
        version: version.version.unwrap_or_default(),
        api_version: version.api_version.unwrap_or_default(),
        runtimes,
        storage_driver: info.driver.unwrap_or_default(),
    })
}

/// Whether `api_version` (e.g. "1.41") is at least [`MIN_API_VERSION`].
pub fn api_version_ok(api_version: &str) -> bool {
    fn parse(v: &str) -> (u32, u32) {
        let mut parts = v.split('.').map(|p| p.parse::<u32>().unwrap_or(0));
        (parts.next().unwrap_or(0), parts.next().unwrap_or(0))
    }
    parse(api_version) >= parse(MIN_API_VERSION)
}

/// Whether the image exists locally.
pub async fn image_exists(docker: &Docker, image: &str) -> Result<bool, DockerError> {
    match docker.inspect_image(image).await {
        Ok(_) => Ok(true),
        Err(bollard::errors::Error::DockerResponseServerError {
            status_code: 404, ..
        }) => Ok(false),
        Err(source) => Err(DockerError::Api {
            call: "inspect_image",
            source,
        }),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_local_socket_comes_from_docker_host() {
        use std::path::PathBuf;
        assert_eq!(
            local_socket_path(None),
            Some(PathBuf::from("/var/run/docker.sock"))
        );
        assert_eq!(
            local_socket_path(Some("")),
            Some(PathBuf::from("/var/run/docker.sock"))
        );
        assert_eq!(
            local_socket_path(Some("unix:///run/user/1000/docker.sock")),
            Some(PathBuf::from("/run/user/1000/docker.sock"))
        );
        assert_eq!(local_socket_path(Some("tcp://10.0.0.1:2375")), None);
        assert_eq!(local_socket_path(Some("ssh://me@host")), None);
        assert_eq!(local_socket_path(Some("unix://relative")), None);
    }

    #[test]
    fn only_transport_failures_mean_the_engine_is_unreachable() {
        use bollard::errors::Error;
        let refused = || std::io::Error::from(std::io::ErrorKind::ConnectionRefused);
        let cases = [
            (Error::IOError { err: refused() }, true),
            (Error::RequestTimeoutError, true),
            (Error::SocketNotFoundError("/run/docker.sock".into()), true),
            (
                Error::DockerResponseServerError {
                    status_code: 404,
                    message: "no such container".into(),
                },
                false,
            ),
            (
                Error::DockerContainerWaitError {
                    error: String::new(),
                    code: 137,
                },
                false,
            ),
            (
                Error::DockerStreamError {
                    error: "bad".into(),
                },
                false,
            ),
        ];
        for (err, expected) in cases {
            assert_eq!(engine_unreachable(&err), expected, "{err:?}");
        }
    }

    #[test]
    fn compares_api_versions_numerically() {
        assert!(api_version_ok("1.41"));
        assert!(api_version_ok("1.43"));
        assert!(api_version_ok("2.0"));
        assert!(!api_version_ok("1.40"));
        assert!(!api_version_ok("1.9"));
        assert!(!api_version_ok("garbage"));
    }
}
