//! The parser never panics, and agrees with a readable regex oracle on well-formed lines.

use logveil::ingest::custom::CustomFormat;
use logveil::ingest::json::{JsonFields, Scratch, parse_mapped};
use logveil::ingest::{Format, parse_line};
use proptest::prelude::*;

proptest! {
    #![proptest_config(ProptestConfig::with_cases(2000))]

    #[test]
    fn parse_never_panics_on_arbitrary_bytes(bytes in proptest::collection::vec(any::<u8>(), 0..400)) {
        let mut s = Scratch::default();
        for f in [Format::Combined, Format::Common, Format::VhostCombined, Format::VhostCommon, Format::NginxJson, Format::Caddy, Format::W3c, Format::Cloudfront, Format::Traefik, Format::TraefikJson, Format::Alb, Format::Haproxy] {
            let _ = parse_line(f, &bytes, &mut s);
        }
    }

    /// Custom formats (compiled Apache and nginx strings, a JSON `log_format`) and JSON logs
    /// through a field mapping, on arbitrary bytes and on JSON-shaped near misses.
    #[test]
    fn custom_and_mapped_json_never_panic(
        bytes in proptest::collection::vec(any::<u8>(), 0..400),
        key in "[a-z_.]{0,12}",
        value in "[ -~]{0,40}",
        number in any::<f64>(),
    ) {
        let customs = [
            r#"%h %l %u %t "%r" %>s %b "%{Referer}i" "%{User-Agent}i" %D"#,
            r#"%h %v:%p %{X-Forwarded-For}i %t %m %U%q %H %s %O"#,
            r#"log_format main '$remote_addr - $remote_user [$time_local] "$request" $status $body_bytes_sent "$http_referer" "$http_user_agent" $request_time';"#,
            r#"log_format j escape=json '{"ip":"$remote_addr","t":"$time_iso8601","r":"$request","s":$status,"ua":"$http_user_agent"}';"#,
        ];
        let json_like = format!(
            r#"{{"{key}":"{value}","time":{number},"ts":"{value}","request":"{value}","client":"{value}","status":{number}}}"#
        );
        for text in customs {
            let format = CustomFormat::compile(text).unwrap();
            let mut uri = Vec::new();
            let _ = format.parse(&bytes, &mut uri);
            let _ = format.parse(json_like.as_bytes(), &mut uri);
        }
        for time_format in ["iso8601", "epoch", "epoch_ms", "clf"] {
            let map = JsonFields {
                client: "client".into(),
                time: if time_format == "iso8601" || time_format == "clf" { "ts".into() } else { "time".into() },
                time_format: Some(time_format.into()),
                request: Some("request".into()),
                status: Some("status".into()),
                user_agent: Some(key.clone()),
                ..JsonFields::default()
            };
            let mut s = Scratch::default();
            let _ = parse_mapped(&bytes, &map, &mut s);
            let _ = parse_mapped(json_like.as_bytes(), &map, &mut s);
        }
    }

    #[test]
    fn parse_never_panics_on_near_misses(
        client in "[0-9a-f:.]{0,40}",
        ts in "[0-9A-Za-z/: +-]{0,30}",
        req in "[ -~]{0,60}",
        status in "[0-9]{0,4}",
        tail in "[ -~]{0,60}",
    ) {
        let line = format!("{client} - - [{ts}] \"{req}\" {status} 12 {tail}");
        let _ = parse_line(Format::Combined, line.as_bytes(), &mut Scratch::default());
    }

    #[test]
    fn parse_agrees_with_regex_oracle(
        a in 0u8..=255, b in 0u8..=255,
        day in 1u32..=28, hour in 0u32..24, minute in 0u32..60,
        path in "/[a-z0-9/._-]{0,30}",
        status in 100u16..600,
        size in 0u64..1_000_000,
        referrer in "(-|https://[a-z]{1,10}\\.ru/[a-z]{0,8})",
        ua in "[A-Za-z0-9/.;() ]{1,40}",
    ) {
        let line = format!(
            "192.0.{a}.{b} - - [{day:02}/Nov/2026:{hour:02}:{minute:02}:00 +0300] \"GET {path} HTTP/1.1\" {status} {size} \"{referrer}\" \"{ua}\""
        );
        let oracle = regex::Regex::new(
            r#"(?x)
            ^(?P<client>\S+)\ \S+\ \S+\         # %h %l %u
            \[(?P<ts>[^\]]+)\]\                 # [%t]
            "(?P<method>[A-Z]+)\ (?P<target>\S+)\ HTTP/[0-9.]+"\   # "%r"
            (?P<status>\d{3})\ (?P<size>\d+|-)\ # %>s %b
            "(?P<referrer>[^"]*)"\ "(?P<ua>[^"]*)"$   # "%{Referer}i" "%{User-agent}i"
            "#,
        ).unwrap();
        let caps = oracle.captures(&line).unwrap();
        let mut scratch = Scratch::default();
        let rec = parse_line(Format::Combined, line.as_bytes(), &mut scratch).unwrap();
        prop_assert_eq!(rec.client, caps["client"].as_bytes());
        prop_assert_eq!(rec.target, Some(caps["target"].as_bytes()));
        prop_assert_eq!(rec.status.to_string(), &caps["status"]);
        prop_assert_eq!(rec.bytes.to_string(), &caps["size"]);
        let want_ref = (&caps["referrer"] != "-").then(|| caps["referrer"].as_bytes());
        prop_assert_eq!(rec.referrer, want_ref);
        let ua = caps["ua"].trim();
        prop_assert_eq!(rec.user_agent.map(|u| u.trim_ascii()), Some(ua.as_bytes()));
        // The timestamp, through an independent computation: days since epoch of 2026-11-DD.
        let want_ts = (20_757 + i64::from(day)) * 86_400 + i64::from(hour) * 3600 + i64::from(minute) * 60 - 3 * 3600;
        prop_assert_eq!(rec.ts, want_ts);
    }
}
