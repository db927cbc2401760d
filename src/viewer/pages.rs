//! The viewer's HTML, rendered on the server with maud (every value is
//! HTML-escaped unless marked otherwise, and nothing here marks a client
//! string so). The pages work without JavaScript; `viewer.js` only adds
//! the live tail. Element ids are the contract the browser tests and
//! scripts rely on: `#facilities`, `#filters`, `#lines`, `#older`,
//! `#stopped`, `#summary`, `#chart`, `#download`, `#tail-toggle`, `#tail`.

use maud::{html, Markup, PreEscaped, DOCTYPE};

use super::lines::{self, SEVERITIES};
use super::Params;
use crate::output::file::format::LineFormat;

/// The page frame: title, stylesheet, script, header.
pub(crate) fn layout(title: &str, body: Markup) -> Markup {
    html! {
        (DOCTYPE)
        html lang="en" {
            head {
                meta charset="utf-8";
                meta name="viewport" content="width=device-width, initial-scale=1";
                title { (title) " — loghogd" }
                link rel="stylesheet" href="/assets/viewer.css";
                script src="/assets/viewer.js" defer {}
            }
            body {
                header {
                    a.brand href="/" { "loghogd" }
                    span.crumb { (title) }
                    form.logout method="post" action="/logout" { button type="submit" { "log out" } }
                }
                main { (body) }
            }
        }
    }
}

/// One row of the index.
#[derive(Debug)]
pub(crate) struct FacilityRow {
    pub(crate) app: String,
    pub(crate) module: String,
    pub(crate) files: usize,
    pub(crate) bytes: u64,
    pub(crate) last_write: Option<String>,
    pub(crate) today: Option<u64>,
    pub(crate) per_minute: Option<f64>,
    pub(crate) hosts: usize,
}

/// `/`: applications → facilities.
pub(crate) fn index(rows: &[FacilityRow]) -> Markup {
    layout(
        "applications",
        html! {
            h1 { "Applications" }
            @if rows.is_empty() {
                p #empty { "No facility you may read has files yet." }
            }
            table #facilities {
                thead { tr {
                    th { "application" } th { "facility" } th.num { "files" }
                    th.num { "size" } th { "last write" } th.num { "today" } th.num { "per minute" }
                } }
                tbody {
                    @for r in rows {
                        tr.facility data-app=(r.app) data-module=(r.module) {
                            td { (r.app) }
                            td { a href=(facility_href(&r.app, &r.module)) { (r.module) }
                                @if r.hosts > 0 { " " span.hosts { "(" (r.hosts) " hosts)" } } }
                            td.num { (r.files) }
                            td.num { (human_bytes(r.bytes)) }
                            td { (r.last_write.as_deref().unwrap_or("—")) }
                            td.num { @match r.today { Some(n) => (n), None => "—" } }
                            td.num { @match r.per_minute { Some(p) => (format!("{p:.1}")), None => "—" } }
                        }
                    }
                }
            }
        },
    )
}

/// The path of a facility's page.
pub(crate) fn facility_href(app: &str, module: &str) -> String {
    format!("/app/{}/{}", urlenc(app), urlenc(module))
}

fn urlenc(s: &str) -> String {
    form_urlencoded::byte_serialize(s.as_bytes()).collect()
}

/// What the facility page's form shows.
#[derive(Debug)]
pub(crate) struct FacilityHead<'a> {
    pub(crate) app: &'a str,
    pub(crate) module: &'a str,
    pub(crate) params: &'a Params,
    /// Hosts with files (`file_per_host` facilities); empty otherwise.
    pub(crate) hosts: &'a [String],
    /// The host whose files are shown (`file_per_host`).
    pub(crate) host: Option<&'a str>,
    /// A problem with the parameters, shown above the results.
    pub(crate) error: Option<String>,
}

/// The facility page up to the first result line; the lines and
/// [`facility_tail`] follow as the scan finds them.
pub(crate) fn facility_head(h: &FacilityHead<'_>) -> String {
    let p = h.params;
    let base = facility_href(h.app, h.module);
    let filters = p.query(false);
    let title = format!("{} / {}", h.app, h.module);
    let tail_q = p.tail_query(h.host);
    let body = html! {
        h1 { (h.app) " / " (h.module) }
        form #filters method="get" action=(base) {
            label { "host "
                @if h.hosts.is_empty() {
                    input #host name="host" type="text" value=(p.host.as_deref().unwrap_or("")) placeholder="any";
                } @else {
                    select #host name="host" {
                        @for host in h.hosts {
                            option value=(host) selected[Some(host.as_str()) == h.host] { (host) }
                        }
                    }
                }
            }
            label { "severity "
                select #severity name="severity" {
                    option value="" { "any" }
                    @for (i, name) in SEVERITIES.iter().enumerate() {
                        option value=(name) selected[p.severity == Some(i as u8)] { (name) " and above" }
                    }
                }
            }
            label { "from " input #from name="from" type="datetime-local" step="1" value=(p.start_text()); }
            label { "to " input #to name="to" type="datetime-local" step="1" value=(p.end_text()); }
            label.grow { "search " input #q name="q" type="search" value=(p.q) placeholder="text or regex"; }
            label { select #mode name="mode" {
                option value="literal" selected[!p.regex] { "literal" }
                option value="regex" selected[p.regex] { "regex" }
            } }
            label { input #icase name="icase" type="checkbox" checked[p.icase]; " ignore case" }
            button #apply type="submit" { "apply" }
        }
        p.links {
            a #download href=(format!("{base}/download{filters}")) { "download this range as text" }
            " · "
            a #share href=(format!("{base}{filters}")) { "link to this view" }
        }
        img #chart src=(format!("{base}/chart.svg{filters}")) alt="messages per minute" width="960" height="180";
        section #live {
            button #tail-toggle type="button" data-src=(format!("{base}/tail{tail_q}")) { "start live tail" }
            ol #tail data-state="closed" {}
        }
        @if let Some(e) = &h.error { p #error.error { (e) } }
        h2 { "Lines, newest first" }
    };
    // The page is streamed: cut the frame at the results list.
    let page = layout(&title, html! { (body) (PreEscaped("<ol id=\"lines\">")) }).into_string();
    strip_close(page)
}

/// The frame rendered above closes `main`, `body` and `html`; the head
/// leaves them open for the streamed lines.
fn strip_close(mut page: String) -> String {
    for close in ["</html>", "</body>", "</main>"] {
        if page.ends_with(close) {
            page.truncate(page.len() - close.len());
        }
    }
    page
}

/// One result line.
pub(crate) fn line(out: &mut String, raw: &[u8], format: LineFormat, year: i32) {
    let text = String::from_utf8_lossy(raw);
    let p = lines::parse(text.as_bytes(), format, year);
    let sev = p.severity.map_or("", |s| SEVERITIES[usize::from(s)]);
    let m = if p.time.is_some() || !p.stamp.is_empty() {
        html! {
            li.line data-sev=(sev) {
                span.ts { (String::from_utf8_lossy(p.stamp)) }
                " " span.host { (String::from_utf8_lossy(p.host)) }
                " " span.body { (String::from_utf8_lossy(p.body)) }
            }
        }
    } else {
        html! { li.line data-sev=(sev) { span.ts {} span.host {} span.body { (text) } } }
    };
    out.push_str(&m.into_string());
    out.push('\n');
}

/// The end of the facility page: summary, early stop, the older link.
pub(crate) fn facility_tail(summary: &str, stopped: Option<&str>, older: Option<&str>) -> String {
    html! {
        (PreEscaped("</ol>"))
        p #summary { (summary) }
        @if let Some(s) = stopped { p #stopped.warn { (s) } }
        @if let Some(href) = older { p { a #older href=(href) { "older lines →" } } }
        (PreEscaped("</main></body></html>"))
    }
    .into_string()
}

/// The login form (and why the last try failed).
pub(crate) fn login(error: Option<&str>, scope: Option<&str>) -> Markup {
    layout(
        "log in",
        html! {
            h1 { "Log in" }
            @if let Some(s) = scope { p { "Reading needs a token or client certificate with scope " code { (s) } "." } }
            @if let Some(e) = error { p #error.error { (e) } }
            form #login method="post" action="/login" {
                label { "token " input #token name="token" type="password" autocomplete="current-password"; }
                button #submit type="submit" { "log in" }
            }
        },
    )
}

/// An error page.
pub(crate) fn message(title: &str, text: &str) -> Markup {
    layout(
        title,
        html! { h1 { (title) } p #error.error { (text) } p { a href="/" { "applications" } } },
    )
}

/// `12.3 MB` and the like.
pub(crate) fn human_bytes(n: u64) -> String {
    const UNITS: [&str; 5] = ["B", "kB", "MB", "GB", "TB"];
    let mut v = n as f64;
    let mut u = 0;
    while v >= 1000.0 && u < UNITS.len() - 1 {
        v /= 1000.0;
        u += 1;
    }
    if u == 0 {
        format!("{n} B")
    } else {
        format!("{v:.1} {}", UNITS[u])
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_script_body_is_text() {
        let mut out = String::new();
        line(
            &mut out,
            b"2026-12-02 10:11:12.123456 - h<i> - <script>alert(1)</script>",
            LineFormat::Loghog,
            2026,
        );
        assert!(!out.contains("<script>") && !out.contains("<i>"), "{out}");
        assert!(
            out.contains("&lt;script&gt;alert(1)&lt;/script&gt;"),
            "{out}"
        );
        assert!(out.contains("h&lt;i&gt;"), "{out}");
    }

    #[test]
    fn sizes() {
        assert_eq!(human_bytes(999), "999 B");
        assert_eq!(human_bytes(1_500_000), "1.5 MB");
    }
}
