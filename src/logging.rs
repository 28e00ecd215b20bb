//! How the command line shows the library's log lines: the library reports progress and
//! choices through `tracing` and never prints; this subscriber writes wick's info lines to
//! stderr as plain lines (as HF Transformers' logging does at its default level), warnings with
//! a `warning:` prefix, and other crates' lines only from warning up. `WICK_LOG` (an
//! `EnvFilter`, e.g. `debug` or `wick=warn`) changes what is shown.

use std::fmt;

use tracing::{Event, Level, Subscriber};
use tracing_subscriber::fmt::format::Writer;
use tracing_subscriber::fmt::{FmtContext, FormatEvent, FormatFields};
use tracing_subscriber::registry::LookupSpan;

/// The filter when `WICK_LOG` is not set.
const DEFAULT_FILTER: &str = "warn,wick=info";

/// Lines as a user reads them: the message alone at info, a level word above and below it.
struct PlainLines;

impl<S, N> FormatEvent<S, N> for PlainLines
where
    S: Subscriber + for<'a> LookupSpan<'a>,
    N: for<'a> FormatFields<'a> + 'static,
{
    fn format_event(&self, ctx: &FmtContext<'_, S, N>, mut writer: Writer<'_>, event: &Event<'_>) -> fmt::Result {
        let meta = event.metadata();
        match *meta.level() {
            Level::INFO => {}
            Level::WARN => write!(writer, "warning: ")?,
            Level::ERROR => write!(writer, "error: ")?,
            level => write!(writer, "{level} {}: ", meta.target())?,
        }
        ctx.field_format().format_fields(writer.by_ref(), event)?;
        writeln!(writer)
    }
}

/// Install the subscriber for the process (once, before any library call).
pub fn init() {
    let filter = tracing_subscriber::EnvFilter::try_from_env("WICK_LOG").unwrap_or_else(|_| DEFAULT_FILTER.into());
    tracing_subscriber::fmt().with_env_filter(filter).with_writer(std::io::stderr).event_format(PlainLines).init();
}
