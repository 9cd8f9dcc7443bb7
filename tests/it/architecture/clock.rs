//! Wall-clock time is read in one place, `mxc::SystemClock` ([`CLOCK`]); code takes an
//! `mxc::Clock`, so that tests can run it on paused time. Clippy holds the calls
//! (`disallowed-methods` in `clippy.toml`); this holds the text, where clippy does not look or
//! was told not to: code a `cfg` leaves out, macro bodies, an `#[allow]`. Comments and strings
//! may name the calls. The integration tests and benches, which compare with servers' clocks,
//! are not read.

use super::{sources, strip, tokens, Token};

/// The one file that reads the machine's clock.
const CLOCK: &str = "crates/mxc/src/time.rs";

/// `TYPE::now` for each of these reads the wall clock.
const WALL_CLOCKS: [&str; 3] = ["Utc", "Local", "SystemTime"];

#[test]
fn only_the_system_clock_reads_the_wall_clock() {
    let mut found = Vec::new();
    for (path, text) in sources().into_iter().filter(|(p, _)| p != CLOCK) {
        found.extend(
            wall_clock_reads(&text)
                .into_iter()
                .map(|(line, call)| format!("  {path}:{line}  {call}")),
        );
    }
    assert!(
        found.is_empty(),
        "{} wall-clock read(s) outside {CLOCK}: take an mxc::Clock (mxc::SystemClock at a program's edge)\n{}",
        found.len(),
        found.join("\n")
    );
}

/// Each `Utc::now` (`Local::now`, `SystemTime::now`) in `text`, called or named, outside
/// comments and strings: its line and the path.
fn wall_clock_reads(text: &str) -> Vec<(usize, String)> {
    let toks = tokens(&strip(text));
    toks.windows(3)
        .filter_map(|w| match w {
            [(Token::Ident(ty), line), (Token::PathSep, _), (Token::Ident(f), _)]
                if f == "now" && WALL_CLOCKS.contains(&ty.as_str()) =>
            {
                Some((*line, format!("{ty}::now")))
            }
            _ => None,
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn calls_and_paths_count_comments_and_strings_do_not() {
        let text = "// Utc::now()\nlet a = chrono::Utc::now();\nlet s = \"Local::now\";\nlet b = x.unwrap_or_else(Utc::now);\nlet c = std::time::SystemTime::now();\nlet d = Instant::now();\n";
        assert_eq!(
            wall_clock_reads(text),
            vec![
                (2, "Utc::now".to_string()),
                (4, "Utc::now".to_string()),
                (5, "SystemTime::now".to_string()),
            ]
        );
    }
}
