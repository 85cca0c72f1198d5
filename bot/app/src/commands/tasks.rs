//! `loop tasks`: list scheduled tasks and cancel them, straight from the database (it works
//! whether or not the daemon runs; the daemon reads the tasks table on every tick).

use loop_daemon::scheduler::describe_task;
use loop_store::{Store, StoreError};

/// The tasks of one channel (a channel key such as `local:default`), or of all channels,
/// one line each.
pub async fn render_list(store: &Store, channel: Option<&str>) -> Result<String, StoreError> {
    let tasks = store.tasks(channel).await?;
    if tasks.is_empty() {
        return Ok(match channel {
            Some(channel) => format!("No scheduled tasks in {channel}."),
            None => "No scheduled tasks.".to_owned(),
        });
    }
    let mut lines = Vec::new();
    for task in &tasks {
        let line = describe_task(task).replace('`', "");
        lines.push(if channel.is_some() {
            line
        } else {
            format!("{} {line}", task.channel_key)
        });
    }
    Ok(lines.join("\n"))
}

/// Cancels one task; says which.
pub async fn cancel(store: &Store, id: &str) -> Result<String, StoreError> {
    let task = store.task(id).await?;
    store.delete_task(id).await?;
    Ok(format!(
        "cancelled {} ({} {}) in {}",
        task.id, task.kind, task.schedule, task.channel_key
    ))
}
