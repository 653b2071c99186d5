#!/usr/bin/env python3
"""Rewrites a combined-format access log as another format, line for line, for
benches/formats.sh: the same traffic in each format, so their speeds compare.

    python3 benches/convert.py FORMAT < combined.log > other.log

FORMAT: nginx_json, caddy, w3c, cloudfront, custom (the nginx `log_format` in formats.sh),
json (the `[json_fields]` mapping in formats.sh). Lines that are not combined (the
generator's malformed ones) are copied as they are: every format then rejects them alike.
"""
import json
import re
import sys
from datetime import datetime, timezone

COMBINED = re.compile(
    rb'^(\S+) \S+ \S+ \[([^\]]+)\] "((?:[^"\\]|\\.)*)" (\d{3}) (\d+|-) '
    rb'"((?:[^"\\]|\\.)*)" "((?:[^"\\]|\\.)*)"$'
)


def fields(line):
    m = COMBINED.match(line)
    if not m:
        return None
    try:
        t = datetime.strptime(m.group(2).decode(), "%d/%b/%Y:%H:%M:%S %z")
    except ValueError:
        return None
    d = lambda b: b.decode("utf-8", "replace").replace('\\"', '"')
    req = d(m.group(3))
    parts = req.split(" ")
    return {
        "client": m.group(1).decode(),
        "clf": m.group(2).decode(),
        "time": t,
        "request": req,
        "method": parts[0] if len(parts) > 1 else "",
        "uri": parts[1] if len(parts) > 1 else "",
        "status": m.group(4).decode(),
        "size": "0" if m.group(5) == b"-" else m.group(5).decode(),
        "referrer": "" if m.group(6) == b"-" else d(m.group(6)),
        "ua": "" if m.group(7) == b"-" else d(m.group(7)),
    }


def nginx_json(f):
    return json.dumps({
        "remote_addr": f["client"], "time_local": f["clf"], "request": f["request"],
        "status": f["status"], "body_bytes_sent": f["size"], "http_referer": f["referrer"],
        "http_user_agent": f["ua"], "http_x_forwarded_for": "",
    }, ensure_ascii=False)


def caddy(f):
    headers = {}
    if f["ua"]:
        headers["User-Agent"] = [f["ua"]]
    if f["referrer"]:
        headers["Referer"] = [f["referrer"]]
    return json.dumps({
        "level": "info", "ts": f["time"].timestamp() + 0.25, "logger": "http.log.access",
        "msg": "handled request",
        "request": {"remote_ip": f["client"], "client_ip": f["client"], "proto": "HTTP/1.1",
                    "method": f["method"], "host": "example.ru", "uri": f["uri"],
                    "headers": headers},
        "bytes_read": 0, "duration": 0.0012, "size": int(f["size"]),
        "status": int(f["status"]), "resp_headers": {"Server": ["Caddy"]},
    }, ensure_ascii=False)


W3C_HEADER = ("#Software: Microsoft Internet Information Services 10.0\n#Version: 1.0\n"
              "#Fields: date time s-ip cs-method cs-uri-stem cs-uri-query s-port cs-username "
              "c-ip cs(User-Agent) cs(Referer) sc-status sc-substatus sc-win32-status sc-bytes "
              "time-taken")


def w3c(f):
    t = f["time"].astimezone(timezone.utc)
    stem, _, query = f["uri"].partition("?")
    dash = lambda s: s.replace(" ", "+") if s else "-"
    return (f"{t:%Y-%m-%d %H:%M:%S} 10.0.0.1 {f['method'] or '-'} {dash(stem)} {dash(query)} "
            f"443 - {f['client']} {dash(f['ua'])} {dash(f['referrer'])} {f['status']} 0 0 "
            f"{f['size']} 12")


CLOUDFRONT_HEADER = (
    "#Version: 1.0\n#Fields: date time x-edge-location sc-bytes c-ip cs-method cs(Host) "
    "cs-uri-stem sc-status cs(Referer) cs(User-Agent) cs-uri-query cs(Cookie) "
    "x-edge-result-type x-edge-request-id x-host-header cs-protocol cs-bytes time-taken "
    "x-forwarded-for ssl-protocol ssl-cipher x-edge-response-result-type cs-protocol-version "
    "fle-status fle-encrypted-fields c-port time-to-first-byte x-edge-detailed-result-type "
    "sc-content-type sc-content-len sc-range-start sc-range-end")


def cloudfront(f):
    from urllib.parse import quote
    t = f["time"].astimezone(timezone.utc)
    stem, _, query = f["uri"].partition("?")
    enc = lambda s: quote(s, safe="/:;,=&?@+$!*'()~") if s else "-"
    return "\t".join([
        f"{t:%Y-%m-%d}", f"{t:%H:%M:%S}", "FRA56-P1", f["size"], f["client"],
        f["method"] or "-", "d111111abcdef8.cloudfront.net", stem or "-", f["status"],
        f["referrer"] or "-", enc(f["ua"]), query or "-", "-", "Hit", "req", "example.ru",
        "https", "300", "0.001", "-", "TLSv1.3", "TLS_AES_128_GCM_SHA256", "Hit", "HTTP/2.0",
        "-", "-", "443", "0.001", "Hit", "text/html", f["size"], "-", "-"])


# The nginx log_format and the JSON mapping formats.sh gives logveil for these two.
def custom(f):
    return (f'{f["client"]} [{f["clf"]}] "{f["request"]}" {f["status"]} {f["size"]} '
            f'"{f["referrer"] or "-"}" "{f["ua"] or "-"}" rt=0.004 "example.ru"')


def json_mapped(f):
    return json.dumps({
        "@timestamp": f["time"].isoformat(), "client": {"ip": f["client"]},
        "http": {"method": f["method"], "url": f["uri"], "status": int(f["status"]),
                 "bytes": int(f["size"]), "referrer": f["referrer"], "agent": f["ua"]},
    }, ensure_ascii=False)


WRITERS = {"nginx_json": (nginx_json, None), "caddy": (caddy, None), "w3c": (w3c, W3C_HEADER),
           "cloudfront": (cloudfront, CLOUDFRONT_HEADER), "custom": (custom, None),
           "json": (json_mapped, None)}


def main():
    if len(sys.argv) != 2 or sys.argv[1] not in WRITERS:
        sys.exit(f"usage: convert.py {{{','.join(WRITERS)}}} < combined.log")
    write, header = WRITERS[sys.argv[1]]
    out = sys.stdout.buffer
    if header:
        out.write(header.encode() + b"\n")
    for line in sys.stdin.buffer:
        line = line.rstrip(b"\n")
        f = fields(line)
        out.write(write(f).encode() + b"\n" if f else line + b"\n")


if __name__ == "__main__":
    main()
