//! `GET /schemas/candidates` (admin listener): what each candidate schema would do to
//! live traffic if promoted, as JSON, or as a page for a browser (`Accept: text/html`
//! or `?format=html`). Counts and field paths only, never a value.

use std::fmt::Write as _;

use bytes::Bytes;
use http::{HeaderMap, Response, StatusCode};
use http_body_util::Full;
use serde_json::json;
use tollgate_report::escape;

use crate::error::json_response;
use crate::schema::candidate::CandidateReport;

/// Rows of the worst fields the page lists per candidate (the JSON has all).
const PAGE_FIELDS: usize = 20;

/// The answer to `GET /schemas/candidates`.
pub(super) fn page(
    schema_set: &str,
    reports: &[CandidateReport],
    headers: &HeaderMap,
    query: Option<&str>,
) -> Response<Full<Bytes>> {
    let html = query.is_some_and(|q| q.split('&').any(|p| p == "format=html"))
        || headers
            .get(http::header::ACCEPT)
            .and_then(|v| v.to_str().ok())
            .is_some_and(|v| v.contains("text/html"));
    if !html {
        return json_response(
            StatusCode::OK,
            &json!({"schema_set": schema_set, "candidates": reports}),
        );
    }
    let mut response = Response::new(Full::new(Bytes::from(render(schema_set, reports))));
    response.headers_mut().insert(
        http::header::CONTENT_TYPE,
        http::HeaderValue::from_static("text/html; charset=utf-8"),
    );
    response
}

fn render(schema_set: &str, reports: &[CandidateReport]) -> String {
    let mut out = String::from(
        "<!doctype html><html><head><meta charset=\"utf-8\"><title>Tollgate candidate schemas</title><style>\
         body{font:14px system-ui,sans-serif;margin:2em;color:#222}\
         table{border-collapse:collapse;margin:.5em 0 1.5em}td,th{padding:4px 10px;border-bottom:1px solid #ddd;text-align:left}\
         td.n{text-align:right;font-variant-numeric:tabular-nums}.bad{color:#b00020;font-weight:bold}.ok{color:#2e7d32}\
         </style></head><body><h1>Candidate schemas</h1>",
    );
    let _ = write!(
        out,
        "<p>Live schema set <code>{}</code>. Each candidate is checked against every \
         live event of its name and decides nothing; promote it with \
         <code>tollgate-collector schema promote &lt;event&gt; v&lt;N&gt;</code>.</p>",
        escape(schema_set)
    );
    if reports.is_empty() {
        out.push_str("<p>No candidate schemas are loaded (<code>&lt;event&gt;/v&lt;N&gt;.candidate.json</code>).</p>");
    }
    for r in reports {
        let class = if r.would_reject > 0 { "bad" } else { "ok" };
        let _ = write!(
            out,
            "<h2>{} v{}</h2><p><code>{}</code>, counting since {}.</p>\
             <table><tr><th>events checked</th><th>accepted by both</th><th>would reject</th>\
             <th>rejected by both</th><th>would accept</th></tr>\
             <tr><td class=\"n\">{}</td><td class=\"n\">{}</td><td class=\"n {class}\">{} ({:.2} % of accepted)</td>\
             <td class=\"n\">{}</td><td class=\"n\">{}</td></tr></table>",
            escape(&r.event),
            r.version,
            escape(&r.file),
            r.since,
            r.checked,
            r.both_accept,
            r.would_reject,
            100.0 * r.would_reject_share,
            r.both_reject,
            r.would_accept,
        );
        if r.errors.is_empty() {
            continue;
        }
        out.push_str(
            "<table><tr><th>field</th><th>keyword</th><th>events it would reject</th></tr>",
        );
        for e in r.errors.iter().take(PAGE_FIELDS) {
            let _ = write!(
                out,
                "<tr><td><code>{}</code></td><td>{}</td><td class=\"n\">{}</td></tr>",
                escape(&e.field),
                escape(&e.keyword),
                e.events
            );
        }
        out.push_str("</table>");
        if r.errors.len() > PAGE_FIELDS {
            let _ = write!(
                out,
                "<p>{} more fields in the JSON (<code>GET /schemas/candidates</code>).</p>",
                r.errors.len() - PAGE_FIELDS
            );
        }
    }
    out.push_str("</body></html>");
    out
}
