//! `azure-iot job schedule-twin|schedule-method|show|list|cancel`: IoT Hub jobs v2 (in the
//! spirit of `az iot hub job`), against the emulator's data directory or a hub's connection
//! string like every service command.

use std::time::Duration;

use azure_iot_core::datetime::parse_timestamp;
use azure_iot_service::{JobSchedule, JobStatus, JobType};
use clap::{Args, Subcommand, ValueEnum};
use futures_util::TryStreamExt;

use crate::calls::MethodCallArgs;
use crate::target::HubArgs;
use crate::twins::patch_args;
use crate::{print_json, print_line};

#[derive(Subcommand)]
pub(crate) enum JobCommand {
    /// Schedule a twin update (tags and/or desired properties) on the devices a query
    /// condition selects.
    ScheduleTwin(ScheduleTwinArgs),
    /// Schedule a direct method call on the devices a query condition selects.
    ScheduleMethod(ScheduleMethodArgs),
    /// Show a job with its device statistics (with --devices, also each device's outcome).
    Show(ShowArgs),
    /// List jobs, one JSON object per line, optionally of one type and status.
    List(ListArgs),
    /// Cancel a scheduled or running job.
    Cancel(IdArgs),
}

/// When and for how long; shared by both schedule commands.
#[derive(Args)]
pub(crate) struct ScheduleArgs {
    /// The job id (letters, digits and '-', at most 64).
    #[arg(long, short = 'j')]
    job_id: String,
    /// The devices: a query condition, the part after WHERE (`tags.floor = 3`,
    /// `deviceId IN ['a','b']`).
    #[arg(long, short = 'q')]
    query_condition: String,
    /// The start time (ISO 8601, e.g. 2030-01-01T00:00:00Z); now when absent.
    #[arg(long)]
    start_time: Option<String>,
    /// The maximum execution time in seconds (the hub's default when absent).
    #[arg(long)]
    max_execution_time: Option<u64>,
    /// Wait for the job to finish and print it then.
    #[arg(long)]
    wait: bool,
}

impl ScheduleArgs {
    fn schedule(&self) -> Result<JobSchedule, String> {
        let mut schedule = JobSchedule::now();
        if let Some(text) = &self.start_time {
            let start = parse_timestamp(text)
                .ok_or_else(|| format!("--start-time {text:?} is not an ISO 8601 time"))?;
            schedule = JobSchedule::at(start);
        }
        if let Some(secs) = self.max_execution_time {
            schedule = schedule.max_execution_time(Duration::from_secs(secs));
        }
        Ok(schedule)
    }
}

#[derive(Args)]
pub(crate) struct ScheduleTwinArgs {
    #[command(flatten)]
    schedule: ScheduleArgs,
    /// Desired properties to merge (JSON object).
    #[arg(long)]
    desired: Option<String>,
    /// Tags to merge (JSON object).
    #[arg(long)]
    tags: Option<String>,
    #[command(flatten)]
    hub: HubArgs,
}

#[derive(Args)]
pub(crate) struct ScheduleMethodArgs {
    #[command(flatten)]
    schedule: ScheduleArgs,
    #[command(flatten)]
    call: MethodCallArgs,
    #[command(flatten)]
    hub: HubArgs,
}

#[derive(Args)]
pub(crate) struct IdArgs {
    /// The job id.
    #[arg(long, short = 'j')]
    job_id: String,
    #[command(flatten)]
    hub: HubArgs,
}

#[derive(Args)]
pub(crate) struct ShowArgs {
    /// The job id.
    #[arg(long, short = 'j')]
    job_id: String,
    /// Also print each device's part (`SELECT * FROM devices.jobs WHERE ...jobId = ...`), one
    /// JSON object per line after the job.
    #[arg(long)]
    devices: bool,
    #[command(flatten)]
    hub: HubArgs,
}

/// A job type filter.
#[derive(Debug, Clone, Copy, ValueEnum)]
pub(crate) enum TypeArg {
    ScheduleUpdateTwin,
    ScheduleDeviceMethod,
}

/// A job status filter.
#[derive(Debug, Clone, Copy, ValueEnum)]
pub(crate) enum StatusArg {
    Scheduled,
    Running,
    Completed,
    Failed,
    Cancelled,
}

#[derive(Args)]
pub(crate) struct ListArgs {
    /// Only jobs of this type.
    #[arg(long, value_enum)]
    job_type: Option<TypeArg>,
    /// Only jobs in this status.
    #[arg(long, value_enum)]
    job_status: Option<StatusArg>,
    #[command(flatten)]
    hub: HubArgs,
}

pub(crate) async fn run(command: JobCommand) -> Result<(), String> {
    match command {
        JobCommand::ScheduleTwin(args) => {
            let patch = patch_args(args.desired.as_deref(), args.tags.as_deref())?;
            let schedule = args.schedule.schedule()?;
            let hub = args.hub.resolve()?;
            let job = hub
                .service
                .schedule_twin_update(
                    &args.schedule.job_id,
                    &args.schedule.query_condition,
                    &patch,
                    schedule,
                )
                .await
                .map_err(|e| e.to_string())?;
            finish(&hub.service, job, args.schedule.wait).await
        }
        JobCommand::ScheduleMethod(args) => {
            let method = args.call.request()?;
            let schedule = args.schedule.schedule()?;
            let hub = args.hub.resolve()?;
            let job = hub
                .service
                .schedule_device_method(
                    &args.schedule.job_id,
                    &args.schedule.query_condition,
                    &method,
                    schedule,
                )
                .await
                .map_err(|e| e.to_string())?;
            finish(&hub.service, job, args.schedule.wait).await
        }
        JobCommand::Show(args) => {
            let hub = args.hub.resolve()?;
            let job = hub
                .service
                .get_job(&args.job_id)
                .await
                .map_err(|e| e.to_string())?;
            print_json(&job)?;
            if args.devices {
                // Job ids are letters, digits and '-': safe inside the quotes.
                let sql = format!(
                    "SELECT * FROM devices.jobs WHERE devices.jobs.jobId = '{}'",
                    args.job_id
                );
                let mut rows = hub.service.query_device_jobs(sql).into_stream();
                while let Some(row) = rows.try_next().await.map_err(|e| e.to_string())? {
                    print_line(&serde_json::to_string(&row).map_err(|e| e.to_string())?)?;
                }
            }
            Ok(())
        }
        JobCommand::List(args) => {
            let hub = args.hub.resolve()?;
            let job_type = args.job_type.map(|t| match t {
                TypeArg::ScheduleUpdateTwin => JobType::ScheduleUpdateTwin,
                TypeArg::ScheduleDeviceMethod => JobType::ScheduleDeviceMethod,
            });
            let status = args.job_status.map(|s| match s {
                StatusArg::Scheduled => JobStatus::Scheduled,
                StatusArg::Running => JobStatus::Running,
                StatusArg::Completed => JobStatus::Completed,
                StatusArg::Failed => JobStatus::Failed,
                StatusArg::Cancelled => JobStatus::Cancelled,
            });
            let mut jobs = hub.service.query_jobs(job_type, status).into_stream();
            while let Some(job) = jobs.try_next().await.map_err(|e| e.to_string())? {
                print_line(&serde_json::to_string(&job).map_err(|e| e.to_string())?)?;
            }
            Ok(())
        }
        JobCommand::Cancel(args) => {
            let hub = args.hub.resolve()?;
            let job = hub
                .service
                .cancel_job(&args.job_id)
                .await
                .map_err(|e| e.to_string())?;
            print_json(&job)
        }
    }
}

/// Prints the scheduled job, or with `wait` polls it (twice a second) until it has finished
/// and prints it then.
async fn finish(
    service: &azure_iot_service::ServiceClient,
    job: azure_iot_service::JobResponse,
    wait: bool,
) -> Result<(), String> {
    if !wait {
        return print_json(&job);
    }
    let mut job = job;
    while !job.status.is_finished() {
        tokio::time::sleep(Duration::from_millis(500)).await;
        job = service
            .get_job(&job.job_id)
            .await
            .map_err(|e| e.to_string())?;
    }
    print_json(&job)
}
