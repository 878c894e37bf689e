//! The jobs scheduler: the tasks that drive jobs v2 through time (the rules and the state are
//! `hub::jobs`).
//!
//! One scheduler task per emulator receives new job ids from the hub (a bounded channel of
//! `MAX_ACTIVE_JOBS`, the most jobs that can be active) and runs each job in a task of its own,
//! kept in a `JoinSet` that shutdown aborts. At start it resumes the jobs that were scheduled or
//! running when the emulator stopped (ADR 18): a scheduled job waits for its start time again;
//! a running one continues with its rows still pending or running (a method call that was in
//! flight is made again), and its maximum execution time still counts from its start time.
//!
//! A job's task:
//!
//! 1. sleeps until the start time (tokio time, so tests can use the paused clock; the wall-clock
//!    distance is converted once);
//! 2. starts the job on the state thread (device selection, rows);
//! 3. works through the devices, twin updates in chunks of [`TWIN_CHUNK`] per state call and
//!    method calls [`METHOD_CONCURRENCY`] at a time, each through `hub::methods::invoke` with
//!    the job's timeouts;
//! 4. stops at whichever comes first: all devices done, the maximum execution time (the rest
//!    fail), a cancel (the state has already marked everything).

use std::time::Duration;

use futures_util::StreamExt as _;
use time::OffsetDateTime;
use tokio::sync::{mpsc, watch};
use tokio::task::JoinSet;

use crate::error::EmulatorError;
use crate::hub::Hub;
use crate::hub::jobs::MAX_ACTIVE_JOBS;
use crate::hub::methods;

/// Twin updates written per state call (one transaction each).
pub(crate) const TWIN_CHUNK: usize = 200;
/// Method calls of one job in flight at once.
pub(crate) const METHOD_CONCURRENCY: usize = 32;

/// Attaches the scheduler to the hub and starts it; the task ends at shutdown, aborting the
/// jobs' tasks (their state stays as stored, and the next start resumes them).
pub(crate) async fn start(
    hub: Hub,
    shutdown: watch::Receiver<bool>,
) -> Result<tokio::task::JoinHandle<()>, EmulatorError> {
    let (wake, woken) = mpsc::channel(MAX_ACTIVE_JOBS);
    let resume = hub.call(move |s| s.attach_job_scheduler(wake)).await?;
    Ok(tokio::spawn(schedule(hub, woken, resume, shutdown)))
}

/// Runs every job it hears of in a task of its own until shutdown.
async fn schedule(
    hub: Hub,
    mut woken: mpsc::Receiver<String>,
    resume: Vec<String>,
    mut shutdown: watch::Receiver<bool>,
) {
    let mut running = JoinSet::new();
    for id in resume {
        running.spawn(run_logged(hub.clone(), id));
    }
    loop {
        tokio::select! {
            id = woken.recv() => match id {
                Some(id) => {
                    running.spawn(run_logged(hub.clone(), id));
                }
                None => break,
            },
            // Reap finished job tasks so the set does not grow.
            Some(_) = running.join_next(), if !running.is_empty() => {}
            _ = shutdown.changed() => break,
        }
    }
    running.shutdown().await;
}

async fn run_logged(hub: Hub, id: String) {
    if let Err(e) = run(&hub, &id).await {
        tracing::warn!(job = %id, error = %e, "a job stopped early; it resumes at the next emulator start");
    }
}

/// How long from now until `at` (zero if it has passed).
fn until(at: OffsetDateTime) -> Duration {
    let left = at - OffsetDateTime::now_utc();
    Duration::try_from(left).unwrap_or(Duration::ZERO)
}

/// Drives one job from its start time to its end.
async fn run(hub: &Hub, id: &str) -> Result<(), EmulatorError> {
    let job = id.to_owned();
    let Some(plan) = hub.call(move |s| s.job_plan(&job)).await? else {
        return Ok(());
    };
    tokio::select! {
        () = tokio::time::sleep(until(plan.start)) => {}
        () = plan.cancel.notified() => return Ok(()),
    }
    let job = id.to_owned();
    let Some(run) = hub.call(move |s| s.start_job(&job)).await?? else {
        return Ok(());
    };
    let deadline = tokio::time::Instant::now() + until(run.deadline);
    let work = async {
        match run.method {
            None => {
                for chunk in run.devices.chunks(TWIN_CHUNK) {
                    let (job, chunk) = (id.to_owned(), chunk.to_vec());
                    hub.call(move |s| s.run_twin_chunk(&job, &chunk)).await??;
                }
            }
            Some(method) => {
                let timeouts = methods::validate_request(&method)?;
                let calls = futures_util::stream::iter(run.devices).map(|device| {
                    let (hub, job) = (hub.clone(), id.to_owned());
                    async move {
                        let (j, d) = (job.clone(), device.clone());
                        let Some(request) = hub.call(move |s| s.begin_device_job(&j, &d)).await??
                        else {
                            return Ok::<(), EmulatorError>(());
                        };
                        let result = methods::invoke(&hub, &device, None, request, timeouts).await;
                        hub.call(move |s| s.end_device_job(&job, &device, result))
                            .await??;
                        Ok(())
                    }
                });
                let mut calls = calls.buffer_unordered(METHOD_CONCURRENCY);
                while let Some(done) = calls.next().await {
                    done?;
                }
            }
        }
        Ok::<(), EmulatorError>(())
    };
    let timed_out = tokio::select! {
        done = work => { done?; false }
        () = tokio::time::sleep_until(deadline) => true,
        () = plan.cancel.notified() => return Ok(()),
    };
    let job = id.to_owned();
    hub.call(move |s| s.finish_job(&job, timed_out)).await??;
    Ok(())
}

#[cfg(test)]
#[path = "jobs_tests.rs"]
mod tests;
