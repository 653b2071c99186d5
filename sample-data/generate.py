#!/usr/bin/env python3
"""Generate the synthetic access logs in sample-data/realistic/ (Python 3.11, stdlib only).

Three days of Apache "combined" log lines for a made-up Russian shop/blog (example.ru),
rotated at 04:00 Europe/Moscow (+0300), gzip-compressed. Output is byte-identical on every
run: one fixed seed, no clock, no set iteration, English month names (no locale), and
gzip headers with mtime=0 and no file name. Run: python3 sample-data/generate.py

Flags write other (e.g. much larger) logs elsewhere, still deterministic for given flags:
    python3 sample-data/generate.py --out DIR --days 7 --visitors-per-day 60000 --plain
With no flags the output is the bundled sample, byte for byte. A visitor-day makes about 11
lines (pageviews, assets, redirects, API calls, plus ~10% bots and ~0.3% malformed lines).
When days x visitors-per-day exceeds 9,000, the 762 documentation IPv4 addresses cannot give
each visitor its own (IP, UA) pair, so 198.18.0.0/15 (RFC 2544, benchmarking) is added.
"""
import argparse
import gzip
import ipaddress
import random
from collections import Counter
from datetime import datetime, timedelta, timezone
from pathlib import Path
from urllib.parse import quote, quote_plus

SEED = 20261102
MSK = timezone(timedelta(hours=3))
START = datetime(2026, 11, 2, 4, 0, 0, tzinfo=MSK)  # first rotation; each file = 24 h
DAYS = 3
DAY = 86400
MONTHS = "Jan Feb Mar Apr May Jun Jul Aug Sep Oct Nov Dec".split()
OUT = Path(__file__).resolve().parent / "realistic"
VISITORS_PER_DAY = 1600  # human (IP, UA) pairs active per day, returning ones included

# --- user agents: (weight, string); about 20 browser families/versions -----------------
WIN, MAC = "Windows NT 10.0; Win64; x64", "Macintosh; Intel Mac OS X 10_15_7"
WK = "AppleWebKit/537.36 (KHTML, like Gecko)"
IOS = "AppleWebKit/605.1.15 (KHTML, like Gecko)"
HUMAN_UAS = [
    (12, f"Mozilla/5.0 ({WIN}) {WK} Chrome/156.0.0.0 Safari/537.36"),
    (6, f"Mozilla/5.0 ({WIN}) {WK} Chrome/155.0.0.0 Safari/537.36"),
    (4, f"Mozilla/5.0 ({MAC}) {WK} Chrome/156.0.0.0 Safari/537.36"),
    (2, f"Mozilla/5.0 (X11; Linux x86_64) {WK} Chrome/156.0.0.0 Safari/537.36"),
    (9, f"Mozilla/5.0 ({WIN}) {WK} Chrome/154.0.0.0 YaBrowser/26.10.0.0 Safari/537.36"),
    (7, "Mozilla/5.0 (Linux; arm_64; Android 14; SM-A556E) " + WK
        + " Chrome/154.0.0.0 YaBrowser/26.10.1.88.00 SA/3 Mobile Safari/537.36"),
    (3, "Mozilla/5.0 (X11; Linux x86_64; rv:158.0) Gecko/20100101 Firefox/158.0"),
    (3, f"Mozilla/5.0 ({WIN}; rv:158.0) Gecko/20100101 Firefox/158.0"),
    (1, "Mozilla/5.0 (X11; Ubuntu; Linux x86_64; rv:140.0) Gecko/20100101 Firefox/140.0"),
    (1, "Mozilla/5.0 (Android 14; Mobile; rv:158.0) Gecko/158.0 Firefox/158.0"),
    (4, f"Mozilla/5.0 ({MAC}) {IOS} Version/27.1 Safari/605.1.15"),
    (10, f"Mozilla/5.0 (iPhone; CPU iPhone OS 18_6 like Mac OS X) {IOS} Version/27.1 "
         "Mobile/15E148 Safari/604.1"),
    (3, f"Mozilla/5.0 (iPhone; CPU iPhone OS 17_7 like Mac OS X) {IOS} Version/17.6 "
        "Mobile/15E148 Safari/604.1"),
    (2, f"Mozilla/5.0 (iPad; CPU OS 18_6 like Mac OS X) {IOS} Version/27.1 "
        "Mobile/15E148 Safari/604.1"),
    (2, f"Mozilla/5.0 (iPhone; CPU iPhone OS 18_6 like Mac OS X) {IOS} CriOS/156.0.7390.54 "
        "Mobile/15E148 Safari/604.1"),
    (12, f"Mozilla/5.0 (Linux; Android 10; K) {WK} Chrome/156.0.0.0 Mobile Safari/537.36"),
    (5, f"Mozilla/5.0 (Linux; Android 10; K) {WK} Chrome/155.0.0.0 Mobile Safari/537.36"),
    (4, f"Mozilla/5.0 (Linux; Android 14; SAMSUNG SM-S921B) {WK} SamsungBrowser/30.0 "
        "Chrome/146.0.0.0 Mobile Safari/537.36"),
    (5, f"Mozilla/5.0 ({WIN}) {WK} Chrome/156.0.0.0 Safari/537.36 Edg/156.0.0.0"),
    (1, f"Mozilla/5.0 ({WIN}) {WK} Chrome/155.0.0.0 Safari/537.36 OPR/140.0.0.0"),
]
# Bots: (share of bot lines, UA, number of client addresses).
BOTS = [
    (30, "Mozilla/5.0 (compatible; YandexBot/3.0; +http://yandex.com/bots)", 4),
    (15, "Mozilla/5.0 (compatible; Googlebot/2.1; +http://www.google.com/bot.html)", 3),
    (10, f"Mozilla/5.0 (Linux; Android 6.0.1; Nexus 5X Build/MMB29P) {WK} "
         "Chrome/156.0.7390.54 Mobile Safari/537.36 (compatible; Googlebot/2.1; "
         "+http://www.google.com/bot.html)", 2),
    (12, "Mozilla/5.0 (compatible; bingbot/2.0; +http://www.bing.com/bingbot.htm)", 2),
    (13, "Mozilla/5.0 (compatible; AhrefsBot/7.0; +http://ahrefs.com/robot/)", 2),
    (5, "curl/8.4.0", 2),
    (8, "python-requests/2.31.0", 2),
    (7, "-", 3),
]
DUMMY_UA = "Apache/2.4.62 (Debian) (internal dummy connection)"

# --- site structure --------------------------------------------------------------------
PRODUCTS = ["iphone-15-pro-256gb", "iphone-16-128gb", "samsung-galaxy-s25-ultra",
            "xiaomi-redmi-note-14-pro", "honor-400-lite", "macbook-air-m4-13",
            "lenovo-thinkpad-x1-carbon-gen-13", "asus-zenbook-14-oled", "huawei-matebook-d16"]
POSTS = ["how-to-configure-nginx", "kak-vybrat-noutbuk-dlya-raboty", "obzor-iphone-15-pro",
         "logrotate-i-gzip", "chernaya-pyatnica-2026-chto-kupit", "android-vs-ios-2026"]
ENC = lambda s: quote(s, safe="/")  # percent-encode UTF-8 (Cyrillic) paths
PAGES = [  # (weight, path); "{p}"/"{b}" pick a random product/post
    (10, "/"), (8, "/catalog"), (6, "/catalog/phones"), (5, "/catalog/laptops"),
    (2, "/catalog/phones?page=2"), (1, "/catalog/laptops?page=2"), (3, "/blog"),
    (1, "/blog?page=2"), (4, "/blog/how-to-configure-nginx"), (6, "/blog/{b}"),
    (14, "/product/{p}"), (2, "/about"), (2, "/contacts"),
    (3, "/search?q=" + quote("телефон")), (1, "/search?q=" + quote_plus("ноутбук asus")),
    (2, ENC("/каталог")), (3, ENC("/акции")), (1, "/новости"),  # the last one raw UTF-8
]
DEAD = ["/product/iphone-13-128gb", "/blog/old-post", "/catalog/tablets", "/sale",
        "/favicon.png", ENC("/доставка")]
SEARCH_TERMS = ["купить iphone 15 pro", "как настроить nginx", "ноутбук для работы",
                "телефон недорого", "example.ru", "macbook air m4 цена", "акции на смартфоны"]
HOSTS = [(80, "example.ru"), (17, "www.example.ru"), (3, "shop.example.ru")]
CHANNELS = [(30, "direct"), (30, "search"), (12, "social"), (5, "email"), (8, "referral"),
            (15, "campaign")]


def pick(rng, pairs):
    """Weighted choice from a list of (weight, value)."""
    return rng.choices([v for _, v in pairs], weights=[w for w, _ in pairs])[0]


def digits(rng, n):
    return str(rng.randint(1, 9)) + "".join(rng.choice("0123456789") for _ in range(n - 1))


def rand_str(rng, n, alphabet="abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789"):
    return "".join(rng.choice(alphabet) for _ in range(n))


def page_path(rng):
    return pick(rng, PAGES).format(p=rng.choice(PRODUCTS), b=rng.choice(POSTS))


def abs_url(host, path):
    """A page as a browser puts it in Referer: raw UTF-8 is percent-encoded."""
    return f"https://{host}{quote(path, safe='/?=&%+:@')}"


def next_page(rng, cur):
    """Next page in a session: a funnel product -> cart -> checkout -> thanks, else random."""
    if cur.startswith("/product/") and rng.random() < 0.25:
        return "/cart"
    if cur == "/cart" and rng.random() < 0.45:
        return "/checkout"
    if cur == "/checkout" and rng.random() < 0.55:
        return "/checkout/thanks"
    if cur == "/checkout/thanks" and rng.random() < 0.3:
        return f"/orders/{digits(rng, 9)}"
    return page_path(rng)


# --- clients -----------------------------------------------------------------------------
V4_NETS = ["192.0.2", "198.51.100", "203.0.113"]  # RFC 5737
V4_BENCH_NETS = [f"198.{18 + i // 256}.{i % 256}" for i in range(512)]  # RFC 2544 198.18/15
MAX_DOC_VISITORS = 9000  # above this many visitors in all, V4_BENCH_NETS are used as well
V6_BASE = int(ipaddress.IPv6Address("2001:db8::"))  # RFC 3849, 2001:db8::/32


def rand_ip(rng, v6=None):
    if v6 if v6 is not None else rng.random() < 0.15:
        return str(ipaddress.IPv6Address(V6_BASE | rng.getrandbits(96)))
    return f"{rng.choice(V4_NETS)}.{rng.randint(1, 254)}"


class Visitor:
    def __init__(self, ip, ua):
        self.ip, self.ua, self.days = ip, ua, 0


def new_visitor(rng, used):
    """A (client IP, user agent) pair not used by any earlier visitor. IPv4 has only
    3 x 254 documentation addresses, so several visitors share an address (NAT-like)."""
    ua, v6 = pick(rng, HUMAN_UAS), rng.random() < 0.15
    while True:
        ip = rand_ip(rng, v6)
        if (ip, ua) not in used:
            used[(ip, ua)] = True
            return Visitor(ip, ua)


# --- entry traffic -----------------------------------------------------------------------
def add_query(path, params):
    return path + ("&" if "?" in path else "?") + "&".join(f"{k}={v}" for k, v in params)


def entry(rng, channel):
    """Landing page and referrer for the first pageview of a session."""
    term = quote_plus(rng.choice(SEARCH_TERMS))
    land = page_path(rng)
    if channel == "direct":
        return ("/" if rng.random() < 0.6 else land), "-"
    if channel == "search":
        ref = pick(rng, [(40, f"https://yandex.ru/search/?text={term}&lr=213"),
                         (20, "https://www.google.com/"), (10, "https://www.google.ru/"),
                         (12, "https://ya.ru/"), (8, f"https://go.mail.ru/search?q={term}"),
                         (5, "https://duckduckgo.com/")])
        return land, ref
    if channel == "social":
        ref = pick(rng, [(30, "https://vk.com/"),
                         (15, "https://m.vk.com/away.php?to="
                          + quote(abs_url("example.ru", land), safe="")),
                         (10, "https://ok.ru/"), (15, f"https://dzen.ru/a/{rand_str(rng, 24)}"),
                         (15, "https://t.me/example_ru_news"),
                         (15, "android-app://org.telegram.messenger/")])
        return land, ref
    if channel == "email":
        ref = pick(rng, [(40, "https://e.mail.ru/inbox/"), (35, "https://mail.yandex.ru/"),
                         (25, "https://mail.google.com/")])
        r = rng.random()
        if r < 0.1:
            land = f"/unsubscribe/user{digits(rng, 5)}%40example.ru"
        elif r < 0.2:
            land = f"/reset/{rand_str(rng, 32, '0123456789abcdef')}"
        elif r < 0.6:
            land = add_query(land, [("utm_source", "newsletter"), ("utm_medium", "email"),
                                    ("utm_campaign", "november_digest")])
        return land, ref
    if channel == "referral":
        ref = pick(rng, [(35, f"https://habr.com/ru/articles/{digits(rng, 6)}/"),
                         (15, "https://пример.рф/"),
                         (15, "https://" + "пример.рф".encode("idna").decode() + "/"),
                         (35, "https://some-blog.example.org/post")])
        return land, ref
    # campaign: utm_* tags plus the ad network's click id
    land = rng.choice([f"/product/{rng.choice(PRODUCTS)}", "/catalog/phones", ENC("/акции"),
                       "/"])
    kind = rng.choice(["yandex", "google", "vk", "newsletter", "telegram", "facebook"])
    if kind == "yandex":
        q = [("utm_source", "yandex"), ("utm_medium", "cpc"), ("utm_campaign", "autumn_sale"),
             ("utm_term", term), ("yclid", digits(rng, 19))]
        ref = "https://yandex.ru/" if rng.random() < 0.6 else "-"
    elif kind == "google":
        q = [("utm_source", "google"), ("utm_medium", "cpc"), ("utm_campaign", "brand"),
             ("gclid", "Cj0KCQiA" + rand_str(rng, 80) + rng.choice("_-") + rand_str(rng, 7))]
        ref = "https://www.google.com/"
    elif kind == "vk":
        q = [("utm_source", "vk"), ("utm_medium", "social"), ("utm_campaign", "black_friday"),
             ("utm_content", "post_" + digits(rng, 4))]
        ref = "https://vk.com/"
    elif kind == "newsletter":
        q = [("utm_source", "newsletter"), ("utm_medium", "email"),
             ("utm_campaign", "november_digest"), ("utm_content", "header_button")]
        ref = "-" if rng.random() < 0.5 else "https://e.mail.ru/"
    elif kind == "telegram":
        q = [("utm_source", "telegram"), ("utm_medium", "social"),
             ("utm_campaign", "channel_post")]
        ref = rng.choice(["-", "android-app://org.telegram.messenger/", "https://t.me/"])
    else:
        q = [("utm_source", "facebook"), ("utm_medium", "paid_social"),
             ("utm_campaign", "black_friday"), ("fbclid", "IwAR" + rand_str(rng, 58))]
        ref = "https://l.facebook.com/"
    return add_query(land, q), ref


# --- requests and log lines --------------------------------------------------------------
class Log:
    """Collects (time, seq, line) events; seq keeps equal-second lines in generation order."""

    def __init__(self):
        self.events, self.stats = [], Counter()

    def add(self, t, ip, req, status, size, ref="-", ua="-", kind=None, ts=None):
        if t < 0 or t >= DAYS * DAY:
            return  # outside the three rotated files
        if ts is None:
            d = START + timedelta(seconds=t)
            ts = f"{d.day:02d}/{MONTHS[d.month - 1]}/{d.year}:{d:%H:%M:%S} +0300"
        line = f'{ip} - - [{ts}] "{req}" {status} {size} "{ref}" "{ua}"'
        self.events.append((t, len(self.events), line, kind))


def asset_requests(rng, log, v, t, ref, page, cached):
    """1-4 static files after a page: 304 (no body) when the browser has them cached."""
    assets = [("/static/app.css", 48213), ("/static/app.js", 182344), ("/favicon.ico", 15086),
              ("/img/logo.png", 6912), ("/img/hero-autumn.png", 241857)]
    if page.startswith("/product/"):
        assets.append((f"/img/products/{page[9:]}.png", 90000 + len(page) * 1111))
    n = pick(rng, [(40, 1), (30, 2), (18, 3), (12, 4)])
    for path, size in rng.sample(assets, n):
        t += rng.randint(0, 1)
        hit = cached and rng.random() < 0.8
        log.add(t, v.ip, f"GET {path} HTTP/1.1", 304 if hit else 200, "-" if hit else size,
                ref, v.ua, "asset")


def pageview(rng, log, v, t, path, ref, host, first):
    """One HTML page (with its redirect, errors, cart POST) and its assets; returns time."""
    if rng.random() < 0.02:  # old URL -> 301 to the canonical one, then the page
        bare = path.split("?")[0]
        old = rng.choice(["/index.php", "/catalog.html",
                          bare + "/" if bare != "/" else "/index.htm"])
        log.add(t, v.ip, f"GET {old} HTTP/1.1", 301, 235, ref, v.ua, "redirect")
        t += 1
    r = rng.random()
    if r < 0.015:
        path, status, size = rng.choice(DEAD), 404, 4521
    elif r < 0.018:
        status, size = 500, 612
    elif r < 0.018 + (0.15 if v.days > 1 else 0 if first else 0.05):  # cached page
        status, size = 304, "-"
    else:
        status, size = 200, 12000 + rng.randint(0, 60000)
    if path == "/cart" and ref.endswith(tuple(PRODUCTS)):
        log.add(t - 2, v.ip, "POST /api/cart HTTP/1.1", 200, 318, ref, v.ua, "api")
    log.add(t, v.ip, f"GET {path} HTTP/1.1", status, size, ref, v.ua, "pageview")
    asset_requests(rng, log, v, t, abs_url(host, path), path, cached=not first or v.days > 1)
    return t


def session(rng, log, v, t):
    """A visit: 1-10 pageviews with gaps of 10 s to 10 min."""
    host = pick(rng, HOSTS)
    channel = pick(rng, CHANNELS)
    log.stats["entry_" + channel] += 1
    path, ref = entry(rng, channel)
    n = pick(rng, list(zip([40, 20, 12, 8, 6, 5, 3, 3, 2, 1], range(1, 11))))
    start = t
    for i in range(n):
        if i:
            t += int(10 * 60 ** rng.random())  # log-uniform 10..600 s
        t = pageview(rng, log, v, t, path, ref, host, i == 0)
        ref = abs_url(host, path)
        path = next_page(rng, path)
    if (start + 4 * 3600) // DAY != (t + 4 * 3600) // DAY:  # local midnight between
        log.stats["sessions_crossing_midnight"] += 1
    log.stats["sessions"] += 1
    return t


HOURLY = [2, 2, 3, 5, 8, 10, 11, 12, 12, 11, 11, 12, 13, 14, 15, 16, 17, 18, 17, 14, 10, 6,
          4, 3]  # relative traffic per local hour, starting 04:00


def start_time(rng, day):
    if rng.random() < 0.01:  # a few deliberately start just before midnight (23:45-23:59)
        return day * DAY + 20 * 3600 - rng.randint(60, 900)
    hour = rng.choices(range(24), weights=HOURLY)[0]
    return day * DAY + hour * 3600 + rng.randint(0, 3599)


def humans(rng, log):
    used, pool = {}, []
    for day in range(DAYS):
        # ~10% of earlier visitors come back (at most half of a day's visitors: long runs)
        back = rng.sample(pool, min(len(pool) // 10, VISITORS_PER_DAY // 2))
        today = back + [new_visitor(rng, used) for _ in range(VISITORS_PER_DAY - len(back))]
        log.stats["returning_visitor_days"] += len(back)
        for v in today:
            v.days += 1
            end = session(rng, log, v, start_time(rng, day))
            if rng.random() < 0.15:  # a second visit after a gap of 35 min to 4 h
                log.stats["second_sessions"] += 1
                session(rng, log, v, end + rng.randint(35 * 60, 4 * 3600))
        pool.extend(v for v in today if v not in back)
    ips = Counter(ip for ip, _ in used)
    log.stats["visitors_total"] = len(used)
    log.stats["ipv6_visitors"] = sum(":" in ip for ip, _ in used)
    log.stats["ips_shared_by_visitors"] = sum(1 for c in ips.values() if c > 1)


def bots(rng, log, n_lines):
    """Crawlers and scripts: pages, robots.txt, sitemap.xml, probes; no assets, no referrer."""
    crawl = [f"/product/{p}" for p in PRODUCTS] + [f"/blog/{b}" for b in POSTS] + [
        "/", "/catalog", "/catalog/phones", "/catalog/laptops", ENC("/акции"), "/новости"]
    probes = ["/wp-login.php", "/.env", "/admin/", "/.git/config", "/phpmyadmin/"]
    clients = [(w / n, ua, rand_ip(rng)) for w, ua, n in BOTS for _ in range(n)]
    for w, ua, ip in clients:
        k = max(1, round(n_lines * w / 100))
        times = sorted(rng.randrange(DAYS * DAY) for _ in range(k))
        for i, t in enumerate(times):
            if i % 40 == 0:
                path = "/robots.txt"
            elif i % 40 == 1:
                path = "/sitemap.xml"
            elif ua in ("-", "python-requests/2.31.0") and rng.random() < 0.3:
                path = rng.choice(probes)
            else:
                path = rng.choice(crawl)
            status = 404 if path in probes else (304 if rng.random() < 0.1 else 200)
            size = {"/robots.txt": 412, "/sitemap.xml": 38211}.get(path)
            size = size or rng.randint(9000, 70000)
            size = "-" if status == 304 else (196 if status == 404 else size)
            if ua == "curl/8.4.0" and rng.random() < 0.3:  # uptime check
                log.add(t, ip, "HEAD / HTTP/1.1", 200, "-", "-", ua, "nonget")
            else:
                log.add(t, ip, f"GET {path} HTTP/1.1", status, size, "-", ua, "bot")
    for _ in range(DAYS * 4):  # Apache waking its children
        log.add(rng.randrange(DAYS * DAY), "2001:db8::1", "OPTIONS * HTTP/1.0", 200, "-", "-",
                DUMMY_UA, "nonget")


def malformed(rng, log):
    """~0.3% broken lines spread over each file, and one >70,000-byte line per file."""
    bad_ts = ["32/Nov/2026:25:00:00 +0300", "00/Nov/2026:10:00:00 +0300",
              "03/Foo/2026:12:00:00 +0300", "2026-11-03T12:00:00+03:00", "03/Nov/2026:12:61:00"]
    tls = [r"\x16\x03\x01\x02\x00\x01\x00\x01\xfc\x03\x03",
           r"\x16\x03\x01\x00\xf1\x01\x00\x00\xed\x03\x03"]
    for day in range(DAYS):
        when = lambda: day * DAY + rng.randrange(DAY)
        for _ in range(rng.randint(16, 22)):  # cut inside the request quote
            log.add(when(), rand_ip(rng), f"GET {page_path(rng)} HTTP/1.1", 200, 1234,
                    "-", pick(rng, HUMAN_UAS), "malformed_truncated")
        for _ in range(rng.randint(8, 12)):
            log.add(when(), rand_ip(rng), "GET / HTTP/1.1", 200, 23456, "-",
                    pick(rng, HUMAN_UAS), "malformed_bad_timestamp", ts=rng.choice(bad_ts))
        for _ in range(rng.randint(10, 14)):
            log.add(when(), rand_ip(rng), rng.choice(tls), 400, 226, "-", "-", "malformed_tls")
        for _ in range(rng.randint(6, 9)):
            log.events.append((when(), len(log.events), "", "malformed_empty"))
        huge = "/search?q=" + quote("телефон") + "&utm_content=" + rand_str(rng, 72000)
        log.add(when(), rand_ip(rng), f"GET {huge} HTTP/1.1", 414, 247, "-",
                pick(rng, HUMAN_UAS), "malformed_long")


def write(log, plain=False):
    OUT.mkdir(parents=True, exist_ok=True)
    rng = random.Random(SEED + 1)  # only for where truncated lines are cut
    files = [[] for _ in range(DAYS)]
    visitors = [{} for _ in range(DAYS)]  # distinct (IP, UA) of human traffic per file
    for t, _, line, kind in sorted(log.events, key=lambda e: (e[0], e[1])):
        if kind in ("pageview", "redirect", "asset", "api"):
            visitors[t // DAY][(line.split(" ", 1)[0], line.rsplit('"', 2)[1])] = True
        if kind == "malformed_truncated":
            q = line.index('"')
            line = line[: q + rng.randint(3, line.index('"', q + 1) - q - 1)]
        files[t // DAY].append(line)
        log.stats[kind] += 1
    for day, lines in enumerate(files):
        name = OUT / f"access-{(START + timedelta(days=day)):%Y-%m-%d}.log"
        data = ("\n".join(lines) + "\n").encode("utf-8")
        files[day] = lines = len(lines)  # let the day's lines go before the next day's
        if plain:
            name.write_bytes(data)
        else:
            name = name.with_name(name.name + ".gz")
            with open(name, "wb") as f, gzip.GzipFile(fileobj=f, mode="wb", mtime=0,
                                                       filename="") as gz:
                gz.write(data)
        del data
        print(f"{name.name}: {lines} lines, {name.stat().st_size} bytes "
              f"{'plain' if plain else 'gzip'}, {len(visitors[day])} human visitors")


def parse_args():
    ap = argparse.ArgumentParser(
        description="Write synthetic combined-format access logs, one file per day "
        "(rotated at 04:00 +0300). With no flags: the bundled sample in "
        "sample-data/realistic/, byte-identical on every run.")
    ap.add_argument("--out", type=Path, default=OUT,
                    help="output directory (default: sample-data/realistic/)")
    ap.add_argument("--days", type=int, default=DAYS,
                    help=f"number of daily files, from 2026-11-02 on (default: {DAYS})")
    ap.add_argument("--visitors-per-day", type=int, default=VISITORS_PER_DAY,
                    help=f"human (IP, UA) pairs active per day (default: {VISITORS_PER_DAY})")
    ap.add_argument("--scale", type=float, default=1.0,
                    help="multiplies --visitors-per-day (default: 1)")
    ap.add_argument("--plain", action="store_true",
                    help="write uncompressed access-DATE.log files instead of .log.gz")
    args = ap.parse_args()
    if args.days < 1:
        ap.error("--days must be at least 1")
    args.visitors_per_day = round(args.visitors_per_day * args.scale)
    if args.visitors_per_day < 1:
        ap.error("--visitors-per-day (times --scale) must be at least 1")
    return args


def main():
    global DAYS, VISITORS_PER_DAY, OUT, V4_NETS
    args = parse_args()
    DAYS, VISITORS_PER_DAY, OUT = args.days, args.visitors_per_day, args.out
    if DAYS * VISITORS_PER_DAY > MAX_DOC_VISITORS:
        V4_NETS = V4_NETS + V4_BENCH_NETS
    rng = random.Random(SEED)
    log = Log()
    humans(rng, log)
    bots(rng, log, len(log.events) // 9)  # bots ~10% of all lines
    malformed(rng, log)
    write(log, plain=args.plain)
    for k in sorted(log.stats):
        print(f"  {k}: {log.stats[k]}")


if __name__ == "__main__":
    main()
