//! `report --html`: the Markdown report as one self-contained HTML file — no script, no font, no
//! link to fetch — with the pictures inline as SVG where the Markdown has its Mermaid blocks.
//!
//! The Markdown is rendered by pulldown-cmark. Raw HTML in it is shown as text, never passed
//! through: the report quotes what models wrote, and this file may be opened in a browser.

use pulldown_cmark::{CodeBlockKind, Event, Options, Parser, Tag, TagEnd};

use orchestrator_view::MissionView;

use crate::svg;

const STYLE: &str = "body{font-family:system-ui,sans-serif;max-width:1100px;margin:2rem auto;padding:0 1rem;\
line-height:1.45;color:#18181b}table{border-collapse:collapse;margin:.5rem 0}th,td{border:1px solid #d4d4d8;\
padding:.2rem .5rem}th{background:#f4f4f5}code{background:#f4f4f5;padding:0 .2rem;border-radius:3px}\
pre{background:#f4f4f5;padding:.6rem;overflow-x:auto}figure{margin:1rem 0;overflow-x:auto}";

/// The whole document.
pub fn document(view: &MissionView, markdown: &str) -> String {
    let title = svg::escape(&format!("Mission report: {}", view.objective));
    format!(
        "<!doctype html>\n<html lang=\"en\">\n<head>\n<meta charset=\"utf-8\">\n\
         <meta name=\"viewport\" content=\"width=device-width, initial-scale=1\">\n<title>{title}</title>\n\
         <style>{STYLE}</style>\n</head>\n<body>\n{}</body>\n</html>\n",
        body(view, markdown)
    )
}

/// The Markdown as HTML, each Mermaid block replaced by its picture.
fn body(view: &MissionView, markdown: &str) -> String {
    let mut events = Vec::new();
    let mut diagram: Option<String> = None;
    for event in Parser::new_ext(markdown, Options::ENABLE_TABLES) {
        match (&mut diagram, event) {
            (None, Event::Start(Tag::CodeBlock(CodeBlockKind::Fenced(lang))))
                if lang.as_ref() == "mermaid" =>
            {
                diagram = Some(String::new());
            }
            (Some(text), Event::Text(more)) => text.push_str(&more),
            (Some(text), Event::End(TagEnd::CodeBlock)) => {
                let picture = if text.starts_with("graph") {
                    svg::graph(view)
                } else {
                    svg::timeline(view)
                };
                events.push(Event::Html(format!("<figure>\n{picture}</figure>\n").into()));
                diagram = None;
            }
            (Some(_), _) => {}
            (None, Event::Html(raw) | Event::InlineHtml(raw)) => events.push(Event::Text(raw)),
            (None, event) => events.push(event),
        }
    }
    let mut html = String::new();
    pulldown_cmark::html::push_html(&mut html, events.into_iter());
    html
}
