//! The runbooks: every `refund-relay` command that the alarms (template.yaml), docs/operating.md
//! and the README tell an operator to run parses with this CLI, and none of the commands that
//! write or tell names `--table` (they refuse it: only the operator function may publish).

use clap::Parser;
use refund_relay::cli::Cli;

/// The commands in `text`: inline code spans that begin `refund-relay `, and the lines of fenced
/// blocks that begin `refund-relay ` or `cargo run -- `.
fn commands(text: &str) -> Vec<String> {
    let mut found = Vec::new();
    let mut prose = String::new();
    let mut fenced = false;
    for line in text.lines() {
        if line.trim_start().starts_with("```") {
            fenced = !fenced;
            continue;
        }
        if fenced {
            let line = line.split(" #").next().unwrap_or_default().trim();
            if let Some(rest) = line.strip_prefix("refund-relay ").or_else(|| line.strip_prefix("cargo run -- ")) {
                found.push(rest.to_owned());
            }
        } else {
            prose.push_str(line);
            prose.push(' ');
        }
    }
    // Inline spans may wrap over lines: read the prose as one line.
    for (i, span) in prose.split('`').enumerate() {
        if i % 2 == 1
            && let Some(rest) = span.strip_prefix("refund-relay ")
        {
            found.push(rest.to_owned());
        }
    }
    found
}

/// `command`'s words as the CLI gets them: optional `[...]` parts left out, placeholders for a
/// provider given a provider's name, an `<address>` an address, `<id>...` as one id.
fn words(command: &str) -> Vec<String> {
    let mut out = vec!["refund-relay".to_owned()];
    let mut depth = 0;
    for word in command.split_whitespace() {
        let opens = word.matches('[').count();
        let closes = word.matches(']').count();
        if depth > 0 || opens > 0 {
            depth += opens;
            depth -= closes.min(depth);
            continue;
        }
        let word = word.trim_end_matches("...").trim_end_matches(['.', ',', ';', ':']);
        let word = match word {
            "<provider>" | "<p>" => "rainforest",
            "<address>" => "dana@example.com",
            w => w,
        };
        out.push(word.to_owned());
    }
    out
}

#[test]
fn every_command_the_runbooks_name_parses_and_writes_only_through_the_deployment() {
    let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR"));
    let mut checked = 0;
    let mut wrong = Vec::new();
    for file in ["template.yaml", "docs/operating.md", "README.md"] {
        let text = std::fs::read_to_string(root.join(file)).unwrap();
        for command in commands(&text) {
            let words = words(&command);
            if let Err(e) = Cli::try_parse_from(&words) {
                wrong.push(format!("{file}: `refund-relay {command}`: {}", e.kind()));
            }
            let writes = matches!(words.get(1).map(String::as_str), Some("reprocess" | "redrive" | "replay" | "erase"));
            if writes && words.iter().any(|w| w == "--table") {
                wrong.push(format!("{file}: `refund-relay {command}` would run on the shell's configuration"));
            }
            checked += 1;
        }
    }
    assert!(wrong.is_empty(), "{wrong:#?}");
    assert!(checked >= 30, "only {checked} commands found: has the extraction broken?");
}

#[test]
fn the_extraction_finds_spans_fences_and_leaves_options_out() {
    let text = "Run `refund-relay redrive --stack S` or\n`refund-relay\nheld list --table T`.\n```sh\nrefund-relay replay <provider> o evt_1... --stack S [--force]   # again\n```\n";
    let found = commands(text);
    assert_eq!(found, ["replay <provider> o evt_1... --stack S [--force]", "redrive --stack S", "held list --table T"]);
    assert_eq!(words(&found[0]), ["refund-relay", "replay", "rainforest", "o", "evt_1", "--stack", "S"]);
    assert!(Cli::try_parse_from(words("redrive --stak S")).is_err(), "a misspelt option fails");
}
