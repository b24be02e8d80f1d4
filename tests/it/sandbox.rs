//! The sandbox against real compiled guests: every typed outcome, and that the host keeps
//! serving whatever the guests do.

use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use serde_json::{Value, json};
use taskbox_runtime::{
    Abi, CancelHandle, JobError, JobInfo, JobReport, JobRequest, Limits, Progress, Runtime,
    RuntimeConfig, TaskModule, componentize_command, is_core_module,
};

use crate::support::{guests, host};

fn module(name: &str) -> Arc<TaskModule> {
    host::runtime()
        .load(&wasm_bytes(name))
        .unwrap_or_else(|err| panic!("loading {name}: {err}"))
}

fn wasm_bytes(name: &str) -> Vec<u8> {
    std::fs::read(guests::wasm(name)).expect("reading a built guest component")
}

fn request(task: &str, input: Value) -> JobRequest {
    JobRequest::new(task, input.to_string(), JobInfo::adhoc("test-job"))
}

async fn run(module_name: &str, request: JobRequest) -> JobReport {
    host::runtime().run(&module(module_name), request).await
}

fn with_limits(mut request: JobRequest, limits: Limits) -> JobRequest {
    request.limits = limits;
    request
}

fn output_json(report: &JobReport) -> Value {
    match &report.outcome {
        Ok(output) => serde_json::from_slice(output).expect("the output is JSON"),
        Err(err) => panic!("expected output, got {err}\nlog:\n{}", report.log),
    }
}

fn error(report: &JobReport) -> &JobError {
    match &report.outcome {
        Ok(output) => panic!(
            "expected a failure, got {}",
            String::from_utf8_lossy(output)
        ),
        Err(err) => err,
    }
}

#[tokio::test]
async fn greet_returns_the_greeting_and_logs() {
    let report = run("hello", request("greet", json!({"name": "Ada"}))).await;
    assert_eq!(output_json(&report), json!({"message": "Hello, Ada!"}));
    assert!(
        report.log.contains("[INFO] greeting Ada in job test-job"),
        "{}",
        report.log
    );
    assert!(report.stats.fuel_used > 0);
    assert!(report.stats.peak_memory > 0);
}

#[tokio::test]
async fn raw_bytes_pass_through_untouched() {
    let mut request = request("reverse", Value::Null);
    request.input = vec![0, 159, 146, 150, 255];
    let report = run("hello", request).await;
    assert_eq!(report.outcome.unwrap(), vec![255, 150, 146, 159, 0]);
}

#[tokio::test]
async fn task_errors_keep_their_retry_decision() {
    let fatal = run("hello", request("add", json!({"numbers": [i64::MAX, 1]}))).await;
    assert_eq!(
        error(&fatal),
        &JobError::TaskError {
            retryable: false,
            retry_after_ms: None,
            message: "the sum overflows a 64-bit integer".into(),
        }
    );
    let retry = run(
        "fixtures",
        request(
            "fail",
            json!({"kind": "retryable", "message": "busy", "after_ms": 1500}),
        ),
    )
    .await;
    assert_eq!(
        error(&retry),
        &JobError::TaskError {
            retryable: true,
            retry_after_ms: Some(1500),
            message: "busy".into(),
        }
    );
    assert!(error(&retry).is_retryable());
}

#[tokio::test]
async fn the_guest_sees_its_attempt() {
    let mut request = request("flaky", json!({"succeed_on": 3}));
    request.info.max_attempts = 3;
    request.info.attempt = 2;
    let report = run("hello", request).await;
    assert!(
        matches!(error(&report), JobError::TaskError { retryable: true, message, .. } if message == "attempt 2 of 3 failed on purpose")
    );
    let mut request = self::request("flaky", json!({"succeed_on": 3}));
    request.info.attempt = 3;
    let report = run("hello", request).await;
    assert_eq!(output_json(&report), json!("succeeded on attempt 3"));
}

#[tokio::test]
async fn bad_input_and_unknown_tasks_are_fatal_task_errors() {
    let report = run("hello", request("greet", json!({"nom": "Ada"}))).await;
    assert!(
        matches!(error(&report), JobError::TaskError { retryable: false, message, .. } if message.contains("missing field `name`")),
        "{:?}",
        report.outcome
    );
    let report = run("hello", request("nope", Value::Null)).await;
    assert!(
        matches!(error(&report), JobError::TaskError { retryable: false, message, .. } if message == "this module has no task `nope`")
    );
}

#[tokio::test]
async fn progress_reaches_the_sink_as_it_happens() {
    let seen = Arc::new(Mutex::new(Vec::new()));
    let mut request = request("countdown", json!({"steps": 4}));
    request.progress = Some(Arc::new({
        let seen = Arc::clone(&seen);
        move |progress: &Progress| seen.lock().unwrap().push(progress.percent)
    }));
    let report = run("hello", request).await;
    assert_eq!(output_json(&report), json!(4));
    assert_eq!(*seen.lock().unwrap(), vec![25, 50, 75, 100]);
    assert_eq!(
        report.progress,
        Some(Progress {
            percent: 100,
            message: "step 4 of 4".into()
        })
    );
}

#[tokio::test]
async fn a_panic_is_a_trap_and_its_message_is_in_the_log() {
    let report = run("fixtures", request("panic", Value::Null)).await;
    assert!(
        matches!(error(&report), JobError::Trap { message } if message.contains("unreachable"))
    );
    assert!(
        report.log.contains("this task always panics"),
        "{}",
        report.log
    );
}

#[tokio::test]
async fn an_infinite_loop_runs_out_of_fuel() {
    let limits = Limits {
        fuel: 50_000_000,
        ..Limits::default()
    };
    let report = run(
        "fixtures",
        with_limits(request("spin", Value::Null), limits),
    )
    .await;
    assert_eq!(error(&report), &JobError::OutOfFuel { budget: 50_000_000 });
    assert_eq!(report.stats.fuel_used, 50_000_000);
}

#[tokio::test]
async fn an_infinite_loop_times_out_on_the_wall_clock() {
    let limits = Limits {
        timeout: Duration::from_millis(300),
        ..Limits::default()
    };
    let report = run(
        "fixtures",
        with_limits(request("spin", Value::Null), limits),
    )
    .await;
    assert_eq!(error(&report), &JobError::Timeout { timeout_ms: 300 });
    // Bounded, not timed: a busy machine may be late, never by seconds.
    assert!(
        report.stats.wall_time < Duration::from_secs(5),
        "{:?}",
        report.stats
    );
}

#[tokio::test]
async fn a_guest_blocked_in_a_host_call_still_times_out() {
    let limits = Limits {
        timeout: Duration::from_millis(300),
        ..Limits::default()
    };
    let fixtures = module("fixtures");
    let request = with_limits(request("sleep", json!({"ms": 60_000})), limits);
    let started = Instant::now();
    let report = host::runtime().run(&fixtures, request).await;
    assert_eq!(error(&report), &JobError::Timeout { timeout_ms: 300 });
    assert!(
        started.elapsed() < Duration::from_secs(10),
        "the guest asked for a minute: {:?}",
        started.elapsed()
    );
}

#[tokio::test]
async fn a_short_sleep_completes() {
    let report = run("fixtures", request("sleep", json!({"ms": 20}))).await;
    assert_eq!(output_json(&report), json!(20));
    assert!(report.stats.wall_time >= Duration::from_millis(20));
}

#[tokio::test]
async fn a_memory_hog_hits_the_memory_limit() {
    let limits = Limits {
        memory: 16 << 20,
        ..Limits::default()
    };
    let report = run("fixtures", with_limits(request("hog", Value::Null), limits)).await;
    assert_eq!(error(&report), &JobError::MemoryLimit { limit: 16 << 20 });
    assert!(report.stats.peak_memory <= 16 << 20);
    assert!(report.stats.peak_memory > 8 << 20, "{:?}", report.stats);
}

#[tokio::test]
async fn endless_recursion_is_a_stack_overflow() {
    let report = run("fixtures", request("recurse", Value::Null)).await;
    assert_eq!(error(&report), &JobError::StackOverflow);
}

#[tokio::test]
async fn output_past_the_cap_is_refused() {
    let limits = Limits {
        output_bytes: 1000,
        ..Limits::default()
    };
    let fits = run(
        "fixtures",
        with_limits(request("huge_output", json!({"bytes": 1000})), limits),
    )
    .await;
    assert_eq!(fits.outcome.unwrap().len(), 1000);
    let report = run(
        "fixtures",
        with_limits(request("huge_output", json!({"bytes": 1001})), limits),
    )
    .await;
    assert_eq!(
        error(&report),
        &JobError::OutputTooLarge {
            size: 1001,
            limit: 1000
        }
    );
}

#[tokio::test]
async fn log_spam_is_truncated_with_a_marker_and_the_job_still_succeeds() {
    let limits = Limits {
        log_bytes: 4096,
        ..Limits::default()
    };
    let report = run(
        "fixtures",
        with_limits(request("log_spam", json!({"lines": 30_000})), limits),
    )
    .await;
    assert_eq!(output_json(&report), json!(30_000));
    let (kept, marker) = report
        .log
        .split_once("[taskbox: log truncated at 4096 bytes, ")
        .expect("a truncation marker");
    assert!(kept.len() <= 4097, "{} bytes kept", kept.len());
    assert!(
        kept.starts_with("stdout line 0\nstderr line 1\n[INFO] log line 2\n"),
        "{kept}"
    );
    assert!(marker.ends_with("more bytes dropped]\n"), "{marker}");
}

#[tokio::test]
async fn cancelling_stops_a_computing_guest() {
    let cancel = CancelHandle::new();
    let mut request = request("spin", Value::Null);
    request.cancel = cancel.clone();
    let job = tokio::spawn(async move { host::runtime().run(&module("fixtures"), request).await });
    cancel.cancel();
    // `spin` never returns: only the cancel ends it before its timeout, which is an error
    // of its own. How soon after the cancel it ends is the benchmarks' to measure.
    let report = job.await.unwrap();
    assert_eq!(error(&report), &JobError::Cancelled);
}

#[tokio::test]
async fn cancelling_stops_a_guest_blocked_in_a_host_call() {
    let cancel = CancelHandle::new();
    let mut request = request("sleep", json!({"ms": 60_000}));
    request.cancel = cancel.clone();
    cancel.cancel();
    let report = run("fixtures", request).await;
    assert_eq!(error(&report), &JobError::Cancelled);
    assert!(
        report.stats.wall_time < Duration::from_secs(10),
        "the guest asked for a minute: {:?}",
        report.stats.wall_time
    );
}

#[tokio::test]
async fn every_job_gets_a_fresh_instance() {
    for _ in 0..3 {
        let report = run("fixtures", request("fresh", Value::Null)).await;
        assert_eq!(
            output_json(&report),
            json!(1),
            "state leaked from an earlier job"
        );
    }
}

#[test]
fn an_unknown_import_fails_at_load_naming_it() {
    let err = host::runtime()
        .load(&wasm_bytes("fixtures_unknown_import"))
        .unwrap_err();
    assert_eq!(
        err,
        JobError::MissingImport {
            name: "acme:vault/secrets".into()
        }
    );
}

#[tokio::test]
async fn a_wasi_program_is_a_command_reading_stdin_and_writing_stdout() {
    let component = module("words");
    assert_eq!(component.abi(), Abi::Command);
    // The same program built for wasm32-wasip1, as a core module the host wraps.
    let core = std::fs::read(guests::wasip1_program("words")).unwrap();
    assert!(is_core_module(&core));
    let wrapped = host::runtime()
        .load(&componentize_command(&core).unwrap())
        .unwrap();
    assert_eq!(wrapped.abi(), Abi::Command);
    for module in [&component, &wrapped] {
        let input = json!({"text": "one two\nthree"});
        let report = host::runtime()
            .run(module, request("count", input.clone()))
            .await;
        assert_eq!(output_json(&report), json!({"words": 3, "lines": 2}));
        let report = host::runtime().run(module, request("shout", input)).await;
        assert_eq!(report.outcome.unwrap(), b"ONE TWO\nTHREE");
    }
}

#[tokio::test]
async fn a_failed_command_is_a_fatal_task_error_and_its_stderr_is_in_the_log() {
    let report = run("words", request("count", json!(["not", "an", "object"]))).await;
    assert_eq!(
        error(&report),
        &JobError::TaskError {
            retryable: false,
            retry_after_ms: None,
            message: "the program exited with a failure status (its stderr is in the job's log)"
                .into(),
        }
    );
    assert!(
        report.log.contains("the input must be a JSON object"),
        "{}",
        report.log
    );
    let report = run("words", request("nope", json!({"text": ""}))).await;
    assert!(report.log.contains("no task `nope`"), "{}", report.log);
}

#[tokio::test]
async fn a_command_gets_no_files_and_its_stdout_is_capped() {
    let report = run("words", request("files", json!({"text": ""}))).await;
    assert_eq!(
        output_json(&report),
        json!({"listed": false, "created": false})
    );
    let limits = Limits {
        output_bytes: 5,
        ..Limits::default()
    };
    let input = json!({"text": "hello world"});
    let report = run("words", with_limits(request("shout", input), limits)).await;
    assert_eq!(
        error(&report),
        &JobError::OutputTooLarge { size: 11, limit: 5 }
    );
}

#[test]
fn core_modules_and_garbage_are_invalid_modules() {
    let core = b"\0asm\x01\0\0\0";
    assert!(
        matches!(host::runtime().load(core), Err(JobError::InvalidModule { message }) if message.contains("core WebAssembly module"))
    );
    let garbage = b"\0asm\x0d\0\x01\0not a component at all";
    assert!(matches!(
        host::runtime().load(garbage),
        Err(JobError::InvalidModule { .. })
    ));
}

#[tokio::test]
async fn the_module_cache_drops_the_least_recently_used_past_its_size_and_running_ones_live_on() {
    let (hello, fixtures, uploads) = (
        wasm_bytes("hello"),
        wasm_bytes("fixtures"),
        wasm_bytes("uploads"),
    );
    let sizes: Vec<u64> = [&hello, &fixtures, &uploads]
        .map(|bytes| host::runtime().load(bytes).unwrap().compiled_size())
        .into();
    assert!(sizes.iter().all(|&size| size > 0), "{sizes:?}");
    // Room for any two of them, not for all three.
    let runtime = Runtime::new(&RuntimeConfig {
        max_concurrent_jobs: 4,
        module_cache_bytes: sizes.iter().sum::<u64>() - 1,
        ..RuntimeConfig::default()
    })
    .unwrap();
    let held = runtime.load(&hello).unwrap();
    let fixtures = runtime.load(&fixtures).unwrap().digest();
    // Using `hello` makes `fixtures` the least recently used, so `uploads` evicts it.
    assert!(runtime.cached(held.digest()).is_some());
    let uploads = runtime.load(&uploads).unwrap().digest();
    assert!(runtime.cached(fixtures).is_none());
    assert!(runtime.cached(uploads).is_some());

    // And a module held by a job runs on after it is evicted.
    runtime.load(&wasm_bytes("fixtures")).unwrap();
    assert!(runtime.cached(held.digest()).is_none());
    let report = runtime
        .run(&held, request("greet", json!({"name": "Ada"})))
        .await;
    assert_eq!(output_json(&report), json!({"message": "Hello, Ada!"}));
}

#[test]
fn precompiled_modules_survive_a_restart_and_damage_is_recompiled() {
    let dir = tempfile::tempdir().unwrap();
    let config = RuntimeConfig {
        max_concurrent_jobs: 4,
        cache_dir: Some(dir.path().to_owned()),
        ..RuntimeConfig::default()
    };
    let bytes = wasm_bytes("hello");
    let digest = Runtime::new(&config)
        .unwrap()
        .load(&bytes)
        .unwrap()
        .digest();
    let artifact = std::fs::read_dir(dir.path())
        .unwrap()
        .map(|entry| entry.unwrap().path())
        .find(|path| path.extension().is_some_and(|ext| ext == "cwasm"))
        .expect("a precompiled artifact");
    assert!(
        artifact
            .file_name()
            .unwrap()
            .to_string_lossy()
            .starts_with(&digest.to_string())
    );

    // A restarted host loads it; a damaged one is replaced by a fresh compile.
    let written = std::fs::read(&artifact).unwrap();
    Runtime::new(&config).unwrap().load(&bytes).unwrap();
    let mut damaged = written.clone();
    let last = damaged.len() - 1;
    damaged[last] ^= 0xff;
    std::fs::write(&artifact, &damaged).unwrap();
    Runtime::new(&config).unwrap().load(&bytes).unwrap();
    assert_ne!(
        std::fs::read(&artifact).unwrap(),
        damaged,
        "the damaged artifact was kept"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn loops_time_out_on_time_while_normal_jobs_complete() {
    let timeout = Duration::from_millis(1000);
    let loops: Vec<_> = (0..8)
        .map(|_| {
            let request = with_limits(
                request("spin", Value::Null),
                Limits {
                    timeout,
                    ..Limits::default()
                },
            );
            tokio::spawn(async move { host::runtime().run(&module("fixtures"), request).await })
        })
        .collect();
    let normal: Vec<_> = (0..50)
        .map(|i| {
            let request = request("greet", json!({"name": format!("worker {i}")}));
            tokio::spawn(async move { host::runtime().run(&module("hello"), request).await })
        })
        .collect();
    for (i, job) in normal.into_iter().enumerate() {
        let report = job.await.unwrap();
        assert_eq!(
            output_json(&report),
            json!({"message": format!("Hello, worker {i}!")})
        );
    }
    for job in loops {
        let report = job.await.unwrap();
        assert_eq!(error(&report), &JobError::Timeout { timeout_ms: 1000 });
        assert!(
            report.stats.wall_time < timeout * 5,
            "a loop ran for {:?}",
            report.stats.wall_time
        );
    }
}
