//! cxpulse: Kafka customer-experience events in, live NPS/CSAT/CES/churn metrics out.
//! This is the binary: command line, wiring and signal handling; the logic lives in `crates/`.

mod config;
mod demo;
mod gateway;
mod kafka_check;
mod memory_limit;
mod pipeline;
mod settings;
mod tools;

use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::atomic::AtomicBool;

use clap::{Parser, Subcommand};
use config::Config;

#[derive(Parser)]
#[command(
    name = "cxpulse",
    version,
    about = "Kafka customer-experience events to live loyalty metrics"
)]
struct Cli {
    /// Log level or tracing filter (overrides [log] level; RUST_LOG also works).
    #[arg(long, global = true, env = "CXPULSE_LOG_LEVEL")]
    log_level: Option<String>,
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Run a worker: consume, count, serve /metrics.
    Run {
        #[arg(long, short)]
        config: Option<PathBuf>,
        /// Overrides [kafka] bootstrap.servers.
        #[arg(long)]
        brokers: Option<String>,
        /// Overrides [kafka] group.id.
        #[arg(long)]
        group: Option<String>,
        /// Overrides [source] topics (repeat for several).
        #[arg(long = "topic")]
        topics: Vec<String>,
        /// Overrides [http] listen.
        #[arg(long)]
        listen: Option<String>,
        /// Overrides [windows] clock (`wall` or `event`).
        #[arg(long)]
        clock: Option<String>,
    },
    /// The embedded default: an in-process broker, a synthetic producer, the worker and HTTP.
    Demo {
        #[arg(long, default_value = "127.0.0.1:9898")]
        listen: String,
        /// Synthetic events per second.
        #[arg(long, default_value_t = 500)]
        rate: u64,
        /// Stop by itself after this many seconds (default: run until Ctrl-C).
        #[arg(long)]
        duration: Option<u64>,
        /// Seconds of live traffic before globex's NPS dips.
        #[arg(long, default_value_t = 10)]
        dip_after: u64,
        /// Also run Debian's prometheus and prometheus-alertmanager on loopback with the
        /// repository's rules (every `for:` in seconds, not minutes), printing each alert.
        #[arg(long)]
        alerting: bool,
    },
    /// Publish synthetic schema-1 events to any Kafka.
    Produce {
        #[arg(long)]
        brokers: String,
        #[arg(long, default_value = "cx-events")]
        topic: String,
        /// Events per second; 0 = as fast as possible.
        #[arg(long, default_value_t = 100)]
        rate: u64,
        /// Stop after this many events (default: until Ctrl-C).
        #[arg(long)]
        count: Option<u64>,
        /// Share of deliberately malformed events, 0..1.
        #[arg(long, default_value_t = 0.0)]
        invalid_ratio: f64,
        /// Event-id prefix; defaults to one unique per run.
        #[arg(long)]
        run_id: Option<String>,
        #[arg(long, default_value_t = 7)]
        seed: u64,
    },
    /// Benchmark: preload events into an embedded broker, compare bare consume with the pipeline.
    /// With --soak: leave a `cxpulse run` worker taking steady traffic and report its state,
    /// checkpoint bytes, memory, and its counts after a SIGKILL and restart.
    Bench {
        #[arg(long, default_value_t = 3_000_000)]
        events: u64,
        /// Partitions of the event topic [default: 160; 12 with --soak].
        #[arg(long)]
        partitions: Option<i32>,
        /// Only measure what concurrent /metrics scrapers cost in memory (10k pairs x 4 windows).
        #[arg(long)]
        scrape_memory: bool,
        /// Soak test for this many seconds instead of the benchmark: gateway-shaped events at
        /// --rate into the `cxpulse run` binary on an embedded broker, sampled every 10 s.
        #[arg(long, value_name = "SECONDS")]
        soak: Option<u64>,
        /// Events per second produced during the soak.
        #[arg(long, default_value_t = 2000, requires = "soak")]
        rate: u64,
        /// Partitions of the state topic during the soak.
        #[arg(long, default_value_t = 4, requires = "soak")]
        state_partitions: i32,
    },
    /// The benchmark's drain, in a process of its own with glibc's allocator settings as they
    /// come (as a bare librdkafka consumer runs): `bench` starts it and reads its one JSON line.
    #[command(hide = true)]
    BenchDrain {
        #[arg(long)]
        brokers: String,
        #[arg(long)]
        events: u64,
        #[arg(long)]
        partitions: i32,
    },
    /// Validate a config file and print the resolved settings (secrets redacted).
    CheckConfig {
        file: PathBuf,
        /// Also connect to Kafka and print the topic settings that will hurt (exit 0 with
        /// warnings; 1 when no broker answers).
        #[arg(long)]
        connect: bool,
    },
    /// The HTTP front door: schema-1 events and survey tools' webhooks to Kafka.
    Gateway {
        #[arg(long, short)]
        config: Option<PathBuf>,
        /// Overrides [kafka] bootstrap.servers.
        #[arg(long)]
        brokers: Option<String>,
        /// Overrides [gateway] listen.
        #[arg(long)]
        listen: Option<String>,
    },
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    if !matches!(cli.command, Command::BenchDrain { .. }) {
        memory_limit::return_freed_memory();
    }
    let result = match cli.command {
        Command::CheckConfig { file, connect } => Config::load(Some(&file)).and_then(|config| {
            let settings = config.compile()?;
            print!("{}", config.redacted_toml());
            if connect {
                pipeline::check_topics_connected(&settings)
                    .map_err(|e| anyhow::anyhow!(settings.redact(&format!("{e:#}"))))?;
            }
            Ok(())
        }),
        Command::Run { config, brokers, group, topics, listen, clock } => (|| {
            let mut config = Config::load(config.as_deref())?;
            if let Some(brokers) = brokers {
                config.set_kafka("bootstrap.servers", &brokers);
            }
            if let Some(group) = group {
                config.set_kafka("group.id", &group);
            }
            if !topics.is_empty() {
                config.source.topics = topics;
            }
            if let Some(listen) = listen {
                config.http.listen = listen;
            }
            if let Some(clock) = clock {
                config.windows.clock = crate::config::clock_name::parse(&clock)
                    .map_err(|e| anyhow::anyhow!("--clock: {e}"))?;
            }
            let settings = config.compile()?;
            pipeline::init_logging(
                cli.log_level.as_deref().unwrap_or(&settings.log.level),
                settings.log.json,
            )?;
            pipeline::run(&settings, None)
                .map_err(|e| anyhow::anyhow!(settings.redact(&format!("{e:#}"))))
        })(),
        Command::Gateway { config, brokers, listen } => (|| {
            let mut config = Config::load(config.as_deref())?;
            if let Some(brokers) = brokers {
                config.set_kafka("bootstrap.servers", &brokers);
            }
            if let Some(listen) = listen {
                config.gateway.listen = listen;
            }
            let settings = config.compile()?;
            pipeline::init_logging(
                cli.log_level.as_deref().unwrap_or(&settings.log.level),
                settings.log.json,
            )?;
            gateway::run(&settings).map_err(|e| anyhow::anyhow!(settings.redact(&format!("{e:#}"))))
        })(),
        Command::Bench {
            events,
            partitions,
            scrape_memory,
            soak: soak_seconds,
            rate,
            state_partitions,
        } => (|| {
            pipeline::init_logging(cli.log_level.as_deref().unwrap_or("warn"), false)?;
            if let Some(seconds) = soak_seconds {
                return tools::soak::run(&tools::soak::SoakOptions {
                    seconds,
                    rate,
                    partitions: partitions.unwrap_or(12),
                    state_partitions,
                });
            }
            if scrape_memory {
                return tools::bench::print_scrape_memory();
            }
            tools::bench::run(events, partitions.unwrap_or(160))
        })(),
        Command::BenchDrain { brokers, events, partitions } => {
            tools::bench::drain_process(&brokers, events, partitions)
        }
        Command::Demo { listen, rate, duration, dip_after, alerting } => (|| {
            pipeline::init_logging(cli.log_level.as_deref().unwrap_or("info"), false)?;
            demo::run(&demo::DemoOptions { listen, rate, duration, dip_after, alerting })
        })(),
        Command::Produce { brokers, topic, rate, count, invalid_ratio, run_id, seed } => (|| {
            pipeline::init_logging(cli.log_level.as_deref().unwrap_or("info"), false)?;
            let stop = std::sync::Arc::new(AtomicBool::new(false));
            pipeline::stop_on_signal(stop.clone())?;
            let options = cxpulse_kafka::produce::ProduceOptions {
                topic,
                rate,
                count,
                synth: cxpulse_core::synth::SynthConfig {
                    seed,
                    run_id: run_id
                        .unwrap_or_else(|| format!("p{}", cxpulse_kafka::util::wall_ms())),
                    invalid_ratio,
                    ..Default::default()
                },
            };
            let mut settings = cxpulse_kafka::KafkaSettings::new();
            settings.insert("bootstrap.servers".into(), brokers.clone());
            let producer_config = cxpulse_kafka::config::producer_config(&settings);
            let log = cxpulse_kafka::client_log::ClientLog::default();
            pipeline::check_brokers(&producer_config, &brokers, &log)?;
            let sent =
                cxpulse_kafka::produce::produce_synthetic(&producer_config, &options, &stop)?;
            println!("produced {sent} events to {}", options.topic);
            Ok(())
        })(
        ),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(error) => {
            eprintln!("cxpulse: {error:#}");
            ExitCode::FAILURE
        }
    }
}
