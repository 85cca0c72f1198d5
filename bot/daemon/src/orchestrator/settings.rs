//! A channel's settings at a glance (the dashboard's settings page): its project directory and
//! the configuration its turns run under, read as a turn reads it and changing nothing.

use std::path::PathBuf;

use loop_adapter::ChannelKey;
use loop_runner::spec::default_work_dir;

use super::{Orchestrator, OrchestratorError};
use crate::config::{ConfigError, ConfigSources, ProjectConfig};

/// What a channel's turns run under.
pub struct ChannelSettings {
    /// The channel's directory (set with `/loop dir`, else its default one, which may not
    /// exist yet).
    pub project_dir: PathBuf,
    /// The global config with the project's file layered on (its trusted values only).
    pub config: Result<ProjectConfig, ConfigError>,
}

impl Orchestrator {
    /// The channel's directory and effective configuration.
    pub async fn channel_settings(
        &self,
        channel: &ChannelKey,
    ) -> Result<ChannelSettings, OrchestratorError> {
        let project_dir = match self.inner.store.channel_work_dir(channel).await? {
            Some(dir) => PathBuf::from(dir),
            None => default_work_dir(&self.inner.config.loop_dir, &channel.slug()),
        };
        let trusted = self.trusted_version(&project_dir).await?;
        let config = self
            .inner
            .config
            .for_project(&project_dir, trusted.as_ref());
        Ok(ChannelSettings {
            project_dir,
            config,
        })
    }

    /// Where this daemon's configuration comes from, for checks that load it as `loop doctor`
    /// does.
    pub fn config_sources(&self) -> ConfigSources {
        ConfigSources {
            home: self.inner.config.home.clone(),
            loop_dir: self.inner.config.loop_dir.clone(),
            env: std::env::vars().collect(),
        }
    }
}
