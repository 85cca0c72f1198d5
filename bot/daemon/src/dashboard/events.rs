//! `GET /ui/events?view=...`: each page's one live connection, Server-Sent Events fed by the
//! daemon's broadcasts (run events, the turns' activity, local chat, approvals waiting). No
//! loop here polls: each event is an HTML fragment named after the element it replaces (or
//! appends to, for a turn's steps), rendered when something the page shows changed.
//!
//! On connect the stream first sends every element of the view as it is now, so nothing that
//! happened between the page's render and the connection is missed (a step already shown is
//! replaced by its id, not repeated). The stream is the response body: when the browser goes
//! away, axum drops it and every subscription with it; nothing outlives the connection.

use std::collections::VecDeque;
use std::convert::Infallible;
use std::time::Duration;

use axum::extract::{Query, State};
use axum::response::sse::{Event, KeepAlive, Sse};
use axum::response::{IntoResponse, Response};
use futures::Stream;
use loop_adapter::ChannelKey;
use loop_wire::api::{LocalEvent, RunEvent};
use serde::Deserialize;
use tokio::sync::{broadcast, watch};
use tokio::time::Instant;

use super::access::Access;
use super::page::{PageError, parse_key};
use super::session::DashboardSession;
use super::{approvals, overview, thread};
use crate::api::ApiState;
use crate::orchestrator::activity::TurnActivity;

/// The overview re-renders at most this often (a running turn reports every second).
const OVERVIEW_EVERY: Duration = Duration::from_millis(500);

#[derive(Debug, Deserialize)]
pub struct EventsQuery {
    view: String,
    #[serde(default)]
    key: String,
}

/// Which page is watching.
#[derive(Debug, Clone)]
enum View {
    Overview,
    Thread(ChannelKey),
    Approvals,
}

/// What woke the stream.
enum Wake {
    Run(RunEvent),
    Activity(TurnActivity),
    Chat(LocalEvent),
    Approvals,
    /// A channel's grants changed: what the session may see may have too.
    Grants,
    /// A broadcast lagged: re-read everything.
    Everything,
    Closed,
}

/// One connection's state.
struct Watch {
    state: ApiState,
    /// What the session may see: the overview and approvals leave out other channels.
    access: Access,
    /// The session lost its role in the watched thread: the stream ends.
    revoked: bool,
    view: View,
    runs: broadcast::Receiver<RunEvent>,
    activity: broadcast::Receiver<TurnActivity>,
    chat: broadcast::Receiver<LocalEvent>,
    approvals: watch::Receiver<u64>,
    grants: watch::Receiver<u64>,
    out: VecDeque<Event>,
    last_overview: Option<Instant>,
    /// Runs whose `Finished` came (newest last): a turn leaves the orchestrator's running set
    /// a moment after it announces its end.
    ended: VecDeque<String>,
}

/// Ended runs remembered per connection.
const ENDED: usize = 64;

fn fragment(target: &str, html: maud::Markup) -> Event {
    Event::default().event(target).data(html.into_string())
}

impl Watch {
    async fn wake(&mut self) -> Wake {
        let lagged = |err| match err {
            broadcast::error::RecvError::Lagged(_) => Wake::Everything,
            broadcast::error::RecvError::Closed => Wake::Closed,
        };
        tokio::select! {
            event = self.runs.recv() => event.map_or_else(lagged, Wake::Run),
            entry = self.activity.recv() => entry.map_or_else(lagged, Wake::Activity),
            event = self.chat.recv() => event.map_or_else(lagged, Wake::Chat),
            changed = self.approvals.changed() => match changed {
                Ok(()) => Wake::Approvals,
                Err(_) => Wake::Closed,
            },
            changed = self.grants.changed() => match changed {
                Ok(()) => Wake::Grants,
                Err(_) => Wake::Closed,
            },
        }
    }

    /// Everything the view shows, as it is now.
    async fn snapshot(&mut self) -> Result<(), PageError> {
        match self.view.clone() {
            View::Overview => self.overview().await?,
            View::Approvals => self.approvals().await?,
            View::Thread(key) => {
                let name = key.to_string();
                let entries = self
                    .state
                    .orchestrator
                    .activity()
                    .latest(&name)
                    .map(|(_, entries)| entries)
                    .unwrap_or_default();
                self.out
                    .push_back(fragment(thread::TURN, thread::turn(&entries)));
                self.thread_status(&key, None).await?;
                self.thread_chat(&name).await?;
            }
        }
        Ok(())
    }

    async fn overview(&mut self) -> Result<(), PageError> {
        if let Some(last) = self.last_overview {
            tokio::time::sleep_until(last + OVERVIEW_EVERY).await;
        }
        let ended: Vec<String> = self.ended.iter().cloned().collect();
        let data = overview::gather(&self.state, &mut self.access, &ended).await?;
        self.out
            .push_back(fragment(overview::TARGET, overview::body(&data)));
        self.last_overview = Some(Instant::now());
        Ok(())
    }

    async fn approvals(&mut self) -> Result<(), PageError> {
        let live = approvals::live(&self.state, &mut self.access).await?;
        self.out.push_back(fragment(approvals::TARGET, live));
        Ok(())
    }

    async fn thread_status(
        &mut self,
        key: &ChannelKey,
        line: Option<&str>,
    ) -> Result<(), PageError> {
        let ended: Vec<String> = self.ended.iter().cloned().collect();
        let status = thread::status(&self.state, key, line, &ended).await?;
        self.out.push_back(fragment(thread::STATUS, status));
        Ok(())
    }

    async fn thread_chat(&mut self, name: &str) -> Result<(), PageError> {
        let chat = thread::chat(&self.state, name).await?;
        self.out.push_back(fragment(thread::CHAT, chat));
        Ok(())
    }

    /// Turns one wake-up into the fragments the view needs.
    async fn react(&mut self, wake: Wake) -> Result<(), PageError> {
        if let Wake::Run(RunEvent::Finished { run_id, .. }) = &wake {
            if self.ended.len() >= ENDED {
                self.ended.pop_front();
            }
            self.ended.push_back(run_id.clone());
        }
        match (self.view.clone(), wake) {
            (_, Wake::Closed) => {}
            (_, Wake::Everything) => self.snapshot().await?,
            (View::Overview, Wake::Run(_) | Wake::Approvals | Wake::Grants) => {
                self.overview().await?;
            }
            (View::Overview, _) => {}
            (View::Approvals, Wake::Approvals | Wake::Grants) => self.approvals().await?,
            (View::Approvals, _) => {}
            (View::Thread(key), wake) => {
                let name = key.to_string();
                // The session must still be allowed to read the thread it watches when a grant
                // changed (and, for good measure, at each of its turns' start and end).
                let recheck = match &wake {
                    Wake::Grants => true,
                    Wake::Run(
                        RunEvent::Started { channel, .. } | RunEvent::Finished { channel, .. },
                    ) => *channel == name,
                    _ => false,
                };
                if recheck {
                    self.access.refresh();
                    if self.access.require_read(&key).await.is_err() {
                        self.revoked = true;
                        return Ok(());
                    }
                }
                match wake {
                    Wake::Run(RunEvent::Started { channel, .. }) if channel == name => {
                        self.out
                            .push_back(fragment(thread::TURN, thread::turn(&[])));
                        self.thread_status(&key, None).await?;
                        self.thread_chat(&name).await?;
                    }
                    Wake::Run(RunEvent::Progress {
                        channel, status, ..
                    }) if channel == name => {
                        self.thread_status(&key, Some(&status)).await?;
                    }
                    Wake::Run(RunEvent::Finished { channel, .. }) if channel == name => {
                        self.thread_status(&key, None).await?;
                        self.thread_chat(&name).await?;
                    }
                    Wake::Activity(entry) if entry.channel == name => {
                        self.out
                            .push_back(fragment(thread::ACTIVITY, thread::activity_entry(&entry)));
                    }
                    // A message posted in a local channel (answers, notices); edits are the
                    // status message, which the run events already show.
                    Wake::Chat(LocalEvent::Posted { channel, .. }) if channel == name => {
                        self.thread_chat(&name).await?;
                    }
                    Wake::Approvals => self.thread_status(&key, None).await?,
                    _ => {}
                }
            }
        }
        Ok(())
    }

    /// The next event to send; `None` ends the stream.
    async fn next(&mut self) -> Option<Event> {
        loop {
            if self.revoked {
                return None;
            }
            if let Some(event) = self.out.pop_front() {
                return Some(event);
            }
            let wake = self.wake().await;
            if matches!(wake, Wake::Closed) {
                return None;
            }
            if let Err(err) = self.react(wake).await {
                tracing::debug!(?err, "a dashboard event stream could not render");
            }
        }
    }
}

/// `GET /ui/events?view=overview|approvals|thread&key=...`.
pub async fn stream(
    State(state): State<ApiState>,
    session: DashboardSession,
    Query(query): Query<EventsQuery>,
) -> Result<Response, PageError> {
    let mut access = Access::of(&state, &session);
    let view = match query.view.as_str() {
        "overview" => View::Overview,
        "approvals" => View::Approvals,
        "thread" => {
            let key = parse_key(&query.key)?;
            access.require_read(&key).await?;
            View::Thread(key)
        }
        other => return Err(PageError::BadRequest(format!("no view {other:?}"))),
    };
    let mut watch = Watch {
        runs: state.orchestrator.subscribe(),
        activity: state.orchestrator.activity().subscribe(),
        chat: state.local.subscribe(),
        approvals: state.gate.waiting_changed(),
        grants: state.orchestrator.grants_changed(),
        state,
        access,
        revoked: false,
        view,
        out: VecDeque::new(),
        last_overview: None,
        ended: VecDeque::new(),
    };
    // Subscribed first, then the snapshot: nothing falls in between.
    watch.snapshot().await?;
    let events = futures::stream::unfold(watch, |mut watch| async move {
        let event = watch.next().await?;
        Some((Ok::<_, Infallible>(event), watch))
    });
    Ok(sse(events))
}

fn sse<S: Stream<Item = Result<Event, Infallible>> + Send + 'static>(events: S) -> Response {
    Sse::new(events)
        .keep_alive(KeepAlive::default())
        .into_response()
}
