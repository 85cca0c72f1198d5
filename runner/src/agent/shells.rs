//! The Docker runner's terminals (see [`crate::shell`]): a shell in the thread's warm agent or
//! in the channel's shell container.

use bollard::exec::{ResizeExecOptions, StartExecOptions, StartExecResults};
use futures::StreamExt;

use super::{DockerRunner, RunError};
use crate::shell::{
    OpenShell, ShellError, ShellHandle, ShellHost, ShellRequest, TerminalSize, hang_up, new_marker,
    shell_exec, tty_bytes,
};

impl From<RunError> for ShellError {
    fn from(err: RunError) -> ShellError {
        ShellError::Container(err.to_string())
    }
}

impl DockerRunner {
    /// Opens a shell in the thread's warm agent when it has one, else in the channel's shell
    /// container (created when missing).
    pub(crate) async fn open_terminal_shell(
        &self,
        request: ShellRequest,
    ) -> Result<OpenShell, ShellError> {
        let channel = request.target.channel_id.clone();
        if let Some((id, name)) = self.warm_container(&channel) {
            match self
                .start_shell(&id, &name, &request, ShellHost::WarmAgent)
                .await
            {
                Ok(shell) => return Ok(shell),
                // Retired between the look-up and the exec: a shell container serves instead.
                Err(err) => {
                    tracing::info!(channel = %channel, container = %name, error = %err, "cannot open a shell in the warm agent: a shell container serves instead")
                }
            }
        }
        let lock = self.shells().channel_lock(&channel).await;
        let _guard = lock.lock().await;
        let container = self
            .ensure_shell(&request.settings, &request.target)
            .await?;
        let shell = self
            .start_shell(
                &container.id,
                &container.name,
                &request,
                ShellHost::ShellContainer,
            )
            .await;
        match shell {
            Ok(shell) => {
                self.shells().opened(&container.id, &shell.handle.id);
                Ok(shell)
            }
            Err(err) => {
                if !self.shells().has_shells(&container.id) {
                    self.remove_shell_container(&container.id, &container.name)
                        .await;
                }
                Err(err)
            }
        }
    }

    async fn start_shell(
        &self,
        container_id: &str,
        container_name: &str,
        request: &ShellRequest,
        host: ShellHost,
    ) -> Result<OpenShell, ShellError> {
        let docker = self.registry().docker();
        let marker = new_marker();
        let size = request.size.clamped();
        let mut config: bollard::models::ExecConfig =
            shell_exec(&marker, &request.target.work_dir).into();
        // Without it the shell starts at 0x0 until the first resize lands.
        config.console_size = Some(vec![usize::from(size.rows), usize::from(size.cols)]);
        let created = docker
            .create_exec(container_id, config)
            .await
            .map_err(ShellError::docker("create_exec"))?;
        let started = docker
            .start_exec(
                &created.id,
                Some(StartExecOptions {
                    detach: false,
                    tty: true,
                    output_capacity: None,
                }),
            )
            .await
            .map_err(ShellError::docker("start_exec"))?;
        let StartExecResults::Attached { output, input } = started else {
            return Err(ShellError::Docker {
                call: "start_exec",
                source: bollard::errors::Error::DockerStreamError {
                    error: "the exec did not attach".to_owned(),
                },
            });
        };
        let handle = ShellHandle {
            id: created.id,
            container_id: container_id.to_owned(),
            container_name: container_name.to_owned(),
            channel_id: request.target.channel_id.clone(),
            host,
            marker,
        };
        // An engine that ignores the exec's console size takes it now.
        if let Err(err) = self.resize_terminal_shell(&handle, size).await {
            tracing::debug!(container = %container_name, error = %err, "cannot size a new terminal");
        }
        tracing::info!(channel = %handle.channel_id, container = %container_name, host = ?host, "terminal shell started");
        Ok(OpenShell {
            handle,
            output: output.map(tty_bytes).boxed(),
            input,
        })
    }

    pub(crate) async fn resize_terminal_shell(
        &self,
        shell: &ShellHandle,
        size: TerminalSize,
    ) -> Result<(), ShellError> {
        let size = size.clamped();
        self.registry()
            .docker()
            .resize_exec(
                &shell.id,
                ResizeExecOptions {
                    width: size.cols,
                    height: size.rows,
                },
            )
            .await
            .map_err(ShellError::docker("resize_exec"))
    }

    /// Ends a shell; the last one of a shell container takes the container with it.
    pub(crate) async fn close_terminal_shell(&self, shell: &ShellHandle) {
        match shell.host {
            ShellHost::WarmAgent => {
                hang_up(self.registry().docker(), &shell.container_id, &shell.marker).await;
            }
            ShellHost::ShellContainer => {
                let lock = self.shells().channel_lock(&shell.channel_id).await;
                let _guard = lock.lock().await;
                if self.shells().closed(&shell.container_id, &shell.id) {
                    self.remove_shell_container(&shell.container_id, &shell.container_name)
                        .await;
                } else {
                    hang_up(self.registry().docker(), &shell.container_id, &shell.marker).await;
                }
            }
        }
        tracing::info!(channel = %shell.channel_id, container = %shell.container_name, "terminal shell ended");
    }

    async fn remove_shell_container(&self, id: &str, name: &str) {
        if let Err(err) = self.registry().remove_now(id).await {
            tracing::warn!(container = %name, error = %err, "cannot remove a shell container");
        } else {
            tracing::info!(container = %name, "shell container removed: its last terminal closed");
        }
    }
}
