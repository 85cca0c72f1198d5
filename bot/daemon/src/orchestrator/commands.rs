//! Chat commands (`/loop ...`): each is answered in the channel with one notice. Who may run
//! which command was checked by `accept` before any of these runs.

use loop_adapter::{Author, ChannelKey, ChatCommand, GrantLevel, GrantSubject, Message};

use super::{Orchestrator, OrchestratorError, workspace};
use crate::scheduler::SchedulerSettings;
use crate::scheduler::input::{CreateTaskInput, plan_new_task};
use loop_store::StoreError;

/// A task template's prompt file larger than this is refused (a prompt, not a dataset).
const MAX_PROMPT_FILE_BYTES: u64 = 256 * 1024;

impl Orchestrator {
    /// Runs one command and posts its answer in the channel.
    pub(super) async fn handle_command(
        &self,
        channel: ChannelKey,
        author: Author,
        command: ChatCommand,
    ) -> Result<(), OrchestratorError> {
        let key = channel.to_string();
        let reply = match command {
            ChatCommand::Prompt(text) => {
                let message = Message {
                    message_id: format!("cmd-{}", uuid::Uuid::new_v4()),
                    channel,
                    author,
                    text,
                    triggers: true,
                    work_dir: None,
                };
                self.accept_message(message).await?;
                return Ok(());
            }
            ChatCommand::Help => HELP.to_owned(),
            ChatCommand::Base(branch) => self.base_command(&channel, &author, branch).await?,
            ChatCommand::Diff => match self.diff_command(&channel).await? {
                Some(reply) => reply,
                // Read and posted in the background.
                None => return Ok(()),
            },
            ChatCommand::Push => self.push_command(&channel).await?,
            ChatCommand::Pr(title) => self.pr_command(&channel, title).await?,
            ChatCommand::Fork { count, prompt } => {
                self.fork_command(&channel, &author, count, prompt).await?
            }
            ChatCommand::Status => self.status_text(&channel).await?,
            ChatCommand::Dir(dir) => match workspace::validate_work_dir(&self.inner.config, &dir) {
                Ok(dir) => {
                    self.inner
                        .store
                        .set_channel_work_dir(&channel, &dir.display().to_string())
                        .await?;
                    format!(
                        "📁 This channel now works in `{}` (new session).",
                        dir.display()
                    )
                }
                Err(err) => format!("⚠️ {err}"),
            },
            ChatCommand::Stop => match self.lock_running().get(&key) {
                Some(turn) => {
                    turn.cancel.cancel();
                    format!("🛑 Stopping run `{}`.", turn.run_id)
                }
                None => "Nothing is running here.".to_owned(),
            },
            ChatCommand::New => {
                self.inner.store.close_sessions(&channel).await?;
                "🆕 The next message starts a fresh session.".to_owned()
            }
            ChatCommand::Tasks => self.tasks_text(&key).await?,
            ChatCommand::Task(id) => match self.channel_task(&key, &id).await? {
                Some(task) => crate::scheduler::describe_task(&task),
                None => format!("No task `{id}` in this channel."),
            },
            ChatCommand::Schedule {
                schedule,
                kind,
                prompt,
            } => {
                let input = CreateTaskInput {
                    schedule,
                    kind,
                    prompt,
                    name: None,
                    timezone: None,
                    created_by: Some(author.id.clone()),
                };
                self.schedule_from_chat(&key, &input).await?
            }
            ChatCommand::ScheduleTemplate(name) => {
                match self.template_task(&channel, &name, &author).await? {
                    Ok(input) => self.schedule_from_chat(&key, &input).await?,
                    Err(why) => format!("⚠️ {why}"),
                }
            }
            ChatCommand::Grant { subject, level } => {
                self.inner
                    .store
                    .set_channel_grant(&channel, &subject, level, &author.id)
                    .await?;
                self.inner
                    .grants_changed
                    .send_modify(|n| *n = n.wrapping_add(1));
                tracing::info!(channel = %key, by = %author.id, subject = ?subject, level = level.as_str(), "channel grant changed");
                let who = match &subject {
                    GrantSubject::User(id) => format!("user `{id}`"),
                    GrantSubject::Role(id) => format!("role `{id}`"),
                };
                match level {
                    GrantLevel::Owner => format!("🔑 {who} is now an owner here."),
                    GrantLevel::Member => format!("✅ {who} may now use loop here."),
                    GrantLevel::Denied => format!("🚫 {who} may no longer use loop here."),
                }
            }
            ChatCommand::Trust(hash) => self.trust_command(&channel, &author, hash).await?,
            ChatCommand::Cancel(id) => match self.channel_task(&key, &id).await? {
                Some(task) => {
                    self.inner.store.delete_task(&task.id).await?;
                    tracing::info!(channel = %key, task = %task.id, "task cancelled from chat");
                    format!(
                        "🗑️ Cancelled task `{}` ({} `{}`).",
                        task.id, task.kind, task.schedule
                    )
                }
                None => format!("No task `{id}` in this channel."),
            },
        };
        self.notify(&channel, &reply).await
    }

    /// Creates a task for the channel from chat, as the agent's `schedule_task` would.
    async fn schedule_from_chat(
        &self,
        key: &str,
        input: &CreateTaskInput,
    ) -> Result<String, OrchestratorError> {
        let settings =
            SchedulerSettings::from_config(&self.inner.config, &self.inner.facts.timezone);
        let zone = crate::scheduler::channel_timezone(
            &self.inner.store,
            &self.inner.config,
            key,
            &settings,
        )
        .await;
        let new = match plan_new_task(key, input, chrono::Utc::now(), zone, settings.min_interval) {
            Ok(new) => new,
            Err(err) => return Ok(format!("⚠️ {err}")),
        };
        let task = self.inner.store.create_task(new).await?;
        tracing::info!(task = %task.id, channel = %key, kind = %task.kind, schedule = %task.schedule, "task scheduled from chat");
        Ok(format!(
            "⏰ Scheduled: {}",
            crate::scheduler::describe_task(&task)
        ))
    }

    /// A task from `task_templates` (the project's over the global ones): its schedule, type,
    /// and prompt (or the file `prompt_path` names, relative to the channel's directory).
    async fn template_task(
        &self,
        channel: &ChannelKey,
        name: &str,
        author: &Author,
    ) -> Result<Result<CreateTaskInput, String>, OrchestratorError> {
        let work_dir = self.inner.store.channel_work_dir(channel).await?;
        let templates = match &work_dir {
            // Task templates need no trust: the trusted version does not matter here.
            Some(dir) => match self
                .inner
                .config
                .for_project(std::path::Path::new(dir), None)
            {
                Ok(loaded) => loaded.config.task_templates,
                Err(err) => return Ok(Err(err.to_string())),
            },
            None => self.inner.config.task_templates.clone(),
        };
        let Some(template) = templates.into_iter().find(|t| t.name == name) else {
            return Ok(Err(format!(
                "no task template `{name}` (task_templates in the config)"
            )));
        };
        let prompt =
            match (&template.prompt, &template.prompt_path) {
                (Some(prompt), _) if !prompt.trim().is_empty() => prompt.clone(),
                (_, Some(path)) => {
                    // A global template (the operator's file) may name any file; one that a
                    // project file brought is read only beneath the project, never through a link.
                    let global =
                        self.inner.config.task_templates.iter().any(|t| {
                            t.name == template.name && t.prompt_path == template.prompt_path
                        });
                    let expanded = self.inner.config.expand(path);
                    let read = match (&work_dir, global) {
                        (Some(dir), false) => crate::project_files::read_in_project(
                            std::path::Path::new(dir),
                            &expanded,
                            MAX_PROMPT_FILE_BYTES,
                        )
                        .map_err(|err| loop_wire::error_chain(&err)),
                        (Some(dir), true) if expanded.is_relative() => {
                            std::fs::read_to_string(std::path::Path::new(dir).join(&expanded))
                                .map_err(|err| format!("cannot read {}: {err}", expanded.display()))
                        }
                        _ => std::fs::read_to_string(&expanded)
                            .map_err(|err| format!("cannot read {}: {err}", expanded.display())),
                    };
                    match read {
                        Ok(text) => text,
                        Err(err) => return Ok(Err(format!("task template `{name}`: {err}"))),
                    }
                }
                _ => return Ok(Err(format!("task template `{name}` has no prompt"))),
            };
        Ok(Ok(CreateTaskInput {
            schedule: template.schedule,
            kind: Some(template.task_type),
            prompt,
            name: Some(template.name),
            timezone: None,
            created_by: Some(author.id.clone()),
        }))
    }

    async fn tasks_text(&self, key: &str) -> Result<String, OrchestratorError> {
        let tasks = self.inner.store.tasks(Some(key)).await?;
        if tasks.is_empty() {
            return Ok("No scheduled tasks in this channel.".to_owned());
        }
        let lines: Vec<String> = tasks.iter().map(crate::scheduler::describe_task).collect();
        Ok(format!(
            "Scheduled tasks (`/loop cancel ID` to cancel):\n{}",
            lines.join("\n")
        ))
    }

    /// A task of this channel (a task of another channel is "not found" here).
    async fn channel_task(
        &self,
        key: &str,
        id: &str,
    ) -> Result<Option<loop_store::TaskRecord>, OrchestratorError> {
        match self.inner.store.task(id.trim()).await {
            Ok(task) if task.channel_key == key => Ok(Some(task)),
            Ok(_) | Err(StoreError::NotFound(_)) => Ok(None),
            Err(err) => Err(err.into()),
        }
    }

    async fn status_text(&self, channel: &ChannelKey) -> Result<String, OrchestratorError> {
        let work_dir = self.inner.store.channel_work_dir(channel).await?;
        let runs = self.inner.store.channel_runs(&channel.to_string()).await?;
        let cost: f64 = runs.iter().map(|r| r.cost_usd).sum();
        let mut text = format!(
            "Work dir: `{}`\nRuns: {} (${cost:.4})",
            work_dir.unwrap_or_else(|| "(default)".to_owned()),
            runs.len()
        );
        if let Some(turn) = self.lock_running().get(&channel.to_string()) {
            text.push_str(&format!(
                "\nRunning: `{}` for {}s",
                turn.run_id,
                turn.started.elapsed().as_secs()
            ));
        }
        Ok(text)
    }
}

/// The answer to `/loop help`.
const HELP: &str = "Commands: `/loop status` · `/loop dir PATH` (work in a directory) · `/loop stop` (stop the running turn) · `/loop new` (fresh session) · `/loop tasks` · `/loop task ID` · `/loop cancel ID` · `/loop schedule SCHEDULE [cron|interval|once] PROMPT` (e.g. `/loop schedule \"0 9 * * 1-5\" check the build`, `/loop schedule every 2h ...`) · `/loop schedule template NAME` · `/loop allow_user|allow_role WHO [owner]` · `/loop deny_user|deny_role WHO` (owners: who may use loop here) · `/loop trust [HASH]` (owners: review or trust the project's `.loop/config.json`) · `/loop base [BRANCH]` (the branch new threads start from; in a thread, its own) · `/loop diff` (this thread's branch against its base) · `/loop push` · `/loop pr [TITLE]` (push and open a pull request) · `/loop fork N PROMPT` (try a prompt N ways, each on its own branch). Anything else: mention me, or start with `!loop`.";
