//! Which text format `/metrics` answers in (issue 17 item 4): OpenMetrics
//! 1.0 when the scraper asks for it, else the Prometheus text format 0.0.4,
//! the one `promtool check metrics`, `curl` users and older scrapers read.
//!
//! `prometheus_client` writes OpenMetrics only. The two formats differ in
//! a few lines, all of them metadata: a counter's family is `x` with
//! samples `x_total` in OpenMetrics and `x_total` in 0.0.4, an info family
//! `x` with samples `x_info` becomes the gauge `x_info`, and 0.0.4 has no
//! `# UNIT` and no `# EOF`. Samples, labels and escaping are the same, so
//! [`to_text_004`] rewrites those lines and copies the rest.

/// A format `/metrics` can answer in.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Format {
    /// `application/openmetrics-text; version=1.0.0`.
    OpenMetrics,
    /// `text/plain; version=0.0.4`.
    Text004,
}

impl Format {
    /// The `Content-Type` of an answer in this format.
    pub(crate) fn content_type(self) -> &'static str {
        match self {
            Format::OpenMetrics => "application/openmetrics-text; version=1.0.0; charset=utf-8",
            Format::Text004 => "text/plain; version=0.0.4; charset=utf-8",
        }
    }

    /// The format an `Accept` header prefers: OpenMetrics only when it is
    /// named (any version Prometheus asks for is answered as 1.0.0) with a
    /// weight at least that of the text format; text when there is no
    /// header, when only `*/*` is given, or when nothing listed is served
    /// (a scraper that asks for protobuf still gets metrics).
    pub(crate) fn negotiate(accept: Option<&str>) -> Format {
        let Some(accept) = accept else {
            return Format::Text004;
        };
        let mut openmetrics = 0.0_f32;
        let mut text = 0.0_f32;
        for range in accept.split(',') {
            let mut parts = range.split(';').map(str::trim);
            let media = parts.next().unwrap_or_default().to_ascii_lowercase();
            let mut weight = 1.0_f32;
            let mut version = None;
            for parameter in parts {
                let Some((key, value)) = parameter.split_once('=') else {
                    continue;
                };
                match key.trim().to_ascii_lowercase().as_str() {
                    "q" => weight = value.trim().parse().unwrap_or(0.0),
                    "version" => version = Some(value.trim().trim_matches('"').to_owned()),
                    _ => {}
                }
            }
            let slot = match media.as_str() {
                "application/openmetrics-text" => &mut openmetrics,
                "text/plain" if version.as_deref().is_none_or(|v| v == "0.0.4") => &mut text,
                "text/*" | "*/*" => &mut text,
                _ => continue,
            };
            *slot = slot.max(weight);
        }
        if openmetrics > 0.0 && openmetrics >= text {
            Format::OpenMetrics
        } else {
            Format::Text004
        }
    }
}

/// The same metrics as `openmetrics` in the text format 0.0.4.
pub(crate) fn to_text_004(openmetrics: &str) -> String {
    let mut out = String::with_capacity(openmetrics.len());
    // `# HELP` comes before `# TYPE` and needs the family's type to be
    // renamed: it waits here until its `# TYPE` line arrives.
    let mut help: Option<(&str, &str)> = None;
    for line in openmetrics.lines() {
        if line == "# EOF" || line.starts_with("# UNIT ") {
            continue;
        }
        if let Some(rest) = line.strip_prefix("# HELP ") {
            flush_help(&mut out, help.take(), None);
            help = Some(rest.split_once(' ').unwrap_or((rest, "")));
            continue;
        }
        if let Some(rest) = line.strip_prefix("# TYPE ") {
            let (family, kind) = rest.split_once(' ').unwrap_or((rest, "untyped"));
            let (name, kind) = match kind {
                "counter" => (format!("{family}_total"), "counter"),
                "info" => (format!("{family}_info"), "gauge"),
                "unknown" => (family.to_owned(), "untyped"),
                other => (family.to_owned(), other),
            };
            let help = help.take().filter(|(named, _)| *named == family);
            flush_help(&mut out, help, Some(&name));
            out.push_str("# TYPE ");
            out.push_str(&name);
            out.push(' ');
            out.push_str(kind);
            out.push('\n');
            continue;
        }
        flush_help(&mut out, help.take(), None);
        out.push_str(line);
        out.push('\n');
    }
    flush_help(&mut out, help, None);
    out
}

/// Writes a held `# HELP` line, under `name` when its family was renamed.
fn flush_help(out: &mut String, help: Option<(&str, &str)>, name: Option<&str>) {
    if let Some((family, text)) = help {
        out.push_str("# HELP ");
        out.push_str(name.unwrap_or(family));
        out.push(' ');
        out.push_str(text);
        out.push('\n');
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// What Prometheus 2.x sends, and what people type.
    #[test]
    fn openmetrics_only_when_asked_for_with_enough_weight() {
        let prometheus = "application/openmetrics-text;version=1.0.0,\
            application/openmetrics-text;version=0.0.1;q=0.75,\
            text/plain;version=0.0.4;q=0.5,*/*;q=0.1";
        assert_eq!(Format::negotiate(Some(prometheus)), Format::OpenMetrics);
        let old_prometheus = "text/plain;version=0.0.4;q=1,*/*;q=0.1";
        assert_eq!(Format::negotiate(Some(old_prometheus)), Format::Text004);
        let text_first = "text/plain;version=0.0.4,application/openmetrics-text;q=0.5";
        assert_eq!(Format::negotiate(Some(text_first)), Format::Text004);
        assert_eq!(Format::negotiate(None), Format::Text004);
        assert_eq!(Format::negotiate(Some("*/*")), Format::Text004);
        assert_eq!(
            Format::negotiate(Some("application/vnd.google.protobuf")),
            Format::Text004
        );
        assert_eq!(
            Format::negotiate(Some("application/openmetrics-text; q=0")),
            Format::Text004,
            "a weight of 0 refuses"
        );
        assert_eq!(
            Format::negotiate(Some("Application/OpenMetrics-Text")),
            Format::OpenMetrics,
            "media types are case-insensitive"
        );
    }

    #[test]
    fn counters_and_infos_are_renamed_and_openmetrics_only_lines_dropped() {
        let openmetrics = "\
# HELP ucs_api_calls API calls
# TYPE ucs_api_calls counter
ucs_api_calls_total{method=\"agents.list\",status=\"ok\"} 3
# HELP ucs_sessions Open sessions
# TYPE ucs_sessions gauge
ucs_sessions 1
# HELP ucs_api_call_duration_seconds How long
# TYPE ucs_api_call_duration_seconds histogram
# UNIT ucs_api_call_duration_seconds seconds
ucs_api_call_duration_seconds_sum 0.5
# HELP ucs_build Build
# TYPE ucs_build info
ucs_build_info{version=\"0.1.0\"} 1
# EOF
";
        let expected = "\
# HELP ucs_api_calls_total API calls
# TYPE ucs_api_calls_total counter
ucs_api_calls_total{method=\"agents.list\",status=\"ok\"} 3
# HELP ucs_sessions Open sessions
# TYPE ucs_sessions gauge
ucs_sessions 1
# HELP ucs_api_call_duration_seconds How long
# TYPE ucs_api_call_duration_seconds histogram
ucs_api_call_duration_seconds_sum 0.5
# HELP ucs_build_info Build
# TYPE ucs_build_info gauge
ucs_build_info{version=\"0.1.0\"} 1
";
        assert_eq!(to_text_004(openmetrics), expected);
    }
}
