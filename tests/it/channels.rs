//! Referrers and campaigns → channel, hand-worked from the rules (not by running logveil).
//!
//! The site's own hosts are example.ru and www.example.ru; the host lists are the built-in
//! `data/channels.toml`. The first table gives, for a pageview without utm parameters, the
//! referrer host logveil publishes (the registrable domain, in Unicode; an Android app's
//! package name whole) and the channel. The second gives the channel of utm-tagged pageviews
//! and of pageviews with click ids, with the kinds of the referrer and of the utm_source
//! written out per row.
//!
//! Tables: cells are separated by `|`; `#` starts a comment line.

use logveil::pseudonymise::channel;
use logveil::pseudonymise::referrer::{HostKind, HostLists, ReferrerClassifier};
use logveil::pseudonymise::{Campaign, channel_of};

/// Referrer → (published host, channel) of an untagged pageview. `(none)`: no published host;
/// `(empty)`: an empty referrer field.
const REFERRERS: &str = "
# channel     | published host         | referrer (as logged)
# Search engines. google.* and yandex.* match any public suffix, so the registrable domain
# keeps its country suffix (co.uk and com.tr are public suffixes).
organic_search | google.com             | https://www.google.com/
organic_search | google.co.uk           | https://www.google.co.uk/search?q=x
organic_search | google.ru              | https://www.google.ru/
# Upper case and the root dot are normalised away before matching.
organic_search | google.com             | HTTPS://WWW.GOOGLE.COM./
organic_search | yandex.ru              | https://yandex.ru/search/?text=x&lr=213
organic_search | yandex.com.tr          | https://yandex.com.tr/search/?text=x
organic_search | yandex.kz              | https://yandex.kz/search/?text=x
organic_search | ya.ru                  | https://ya.ru/
# яндекс.рф in every form a log can hold: raw UTF-8, upper case (IDNA lower-cases it),
# Punycode, percent-encoded UTF-8. Hosts are matched in Punycode, published in Unicode.
organic_search | яндекс.рф              | https://яндекс.рф/search/?text=x
organic_search | яндекс.рф              | https://ЯНДЕКС.РФ/
organic_search | яндекс.рф              | https://xn--d1acpjx3f.xn--p1ai/
organic_search | яндекс.рф              | https://%D1%8F%D0%BD%D0%B4%D0%B5%D0%BA%D1%81.%D1%80%D1%84
# Mail.ru and Rambler: only their search hosts are listed; the registrable domain is published.
organic_search | mail.ru                | https://go.mail.ru/search?q=x
organic_search | rambler.ru             | https://nova.rambler.ru/search?query=x
organic_search | duckduckgo.com         | https://duckduckgo.com/
organic_search | bing.com               | https://www.bing.com/search?q=x
# search.yahoo.com covers the country sub-domains.
organic_search | yahoo.com              | https://uk.search.yahoo.com/search?p=x
organic_search | yahoo.co.jp            | https://search.yahoo.co.jp/search?p=x
organic_search | ecosia.org             | https://www.ecosia.org/search?q=x
organic_search | brave.com              | https://search.brave.com/search?q=x
organic_search | qwant.com              | https://www.qwant.com/?q=x
organic_search | startpage.com          | https://www.startpage.com/do/search
organic_search | baidu.com              | https://www.baidu.com/link?url=x
organic_search | naver.com              | https://search.naver.com/search.naver?query=x
organic_search | seznam.cz              | https://search.seznam.cz/?q=x
organic_search | sogou.com              | https://www.sogou.com/link?url=x
organic_search | so.com                 | https://www.so.com/link?m=x
organic_search | petalsearch.com        | https://www.petalsearch.com/search?query=x
organic_search | kagi.com               | https://kagi.com/search?q=x
# The Yandex app on Android: an app's package name is published whole.
organic_search | ru.yandex.searchplugin | android-app://ru.yandex.searchplugin/

# Social networks.
organic_social | vk.com                 | https://vk.com/away.php?to=https%3A%2F%2Fexample.ru%2F
organic_social | vk.com                 | https://m.vk.com/
# The port is not part of the host.
organic_social | vk.com                 | https://vk.com:443/feed
organic_social | vk.ru                  | https://vk.ru/
organic_social | vkvideo.ru             | https://vkvideo.ru/video-1_456239017
organic_social | ok.ru                  | https://ok.ru/
organic_social | dzen.ru                | https://dzen.ru/a/xyz
# zen.yandex.ru (social) is a plain entry, so the yandex.* wildcard (search) is not tried;
# the published host is still the registrable domain.
organic_social | yandex.ru              | https://zen.yandex.ru/media/x
organic_social | t.me                   | https://t.me/channel/123
organic_social | telegram.org           | https://web.telegram.org/k/
organic_social | facebook.com           | https://l.facebook.com/l.php?u=https%3A%2F%2Fexample.ru%2F
organic_social | facebook.com           | https://lm.facebook.com/l.php?u=x
organic_social | instagram.com          | https://l.instagram.com/?u=x
organic_social | t.co                   | https://t.co/abc
organic_social | x.com                  | https://x.com/user/status/1
organic_social | linkedin.com           | https://www.linkedin.com/
organic_social | youtube.com            | https://www.youtube.com/
# pinterest.*: country sub-domains and country suffixes alike.
organic_social | pinterest.com          | https://ru.pinterest.com/pin/1/
organic_social | pinterest.co.uk        | https://www.pinterest.co.uk/pin/1/
organic_social | reddit.com             | https://www.reddit.com/r/rust/
organic_social | tiktok.com             | https://www.tiktok.com/@user
organic_social | threads.com            | https://www.threads.com/@user
organic_social | bsky.app               | https://bsky.app/profile/user.bsky.social
organic_social | habr.com               | https://habr.com/ru/articles/1/
organic_social | pikabu.ru              | https://pikabu.ru/story/x_1
# A personal blog's sub-domain is not published on its own.
organic_social | livejournal.com        | https://ivan.livejournal.com/1234.html
organic_social | rutube.ru              | https://rutube.ru/video/abc/
organic_social | yappy.media            | https://yappy.media/
organic_social | likee.video            | https://likee.video/@user
# my.mail.ru is social, though go.mail.ru is search and e.mail.ru e-mail.
organic_social | mail.ru                | https://my.mail.ru/
organic_social | org.telegram.messenger | android-app://org.telegram.messenger/
organic_social | com.vkontakte.android  | android-app://com.vkontakte.android/

# Webmail: plain e-mail entries win over the yandex.* and google.* wildcards.
email          | mail.ru                | https://e.mail.ru/inbox
email          | yandex.ru              | https://mail.yandex.ru/
email          | google.com             | https://mail.google.com/
email          | live.com               | https://outlook.live.com/mail/0/
email          | rambler.ru             | https://mail.rambler.ru/
email          | com.google.android.gm  | android-app://com.google.android.gm/

# The site itself, including a sub-domain of one of its hosts.
internal       | example.ru             | https://example.ru/other-page
internal       | example.ru             | https://www.example.ru/
internal       | example.ru             | https://shop.example.ru/cart

# Referrals: any other host.
referral       | some-site.co.uk        | https://blog.some-site.co.uk/post
referral       | пример.рф              | https://пример.рф/статья
referral       | пример.рф              | https://xn--e1afmkfd.xn--p1ai/
# Portal news is not search: only go.mail.ru and nova.rambler.ru are listed.
referral       | mail.ru                | https://news.mail.ru/politics/1/
referral       | rambler.ru             | https://news.rambler.ru/
# Look-alikes are not internal: the host is neither example.ru nor below it.
referral       | notexample.ru          | https://notexample.ru/
referral       | attacker.net           | https://example.ru.attacker.net/
# AI assistants are not listed, so they are referrals.
referral       | chatgpt.com            | https://chatgpt.com/
referral       | perplexity.ai          | https://www.perplexity.ai/search/x
# An address is never published, even a private one.
referral       | (ip address)           | http://192.168.0.1/
referral       | (ip address)           | http://[2001:db8::1]/
# An unlisted app (Sberbank Online) is a referral, published as its package.
referral       | ru.sberbankmobile      | android-app://ru.sberbankmobile/

# No referrer, or one without a host: direct.
direct         | (none)                 | -
direct         | (none)                 | (empty)
direct         | (none)                 | not a url
";

/// Tagged pageview → channel. The referrer and utm_source kinds are `search`, `social`,
/// `email`, `internal`, `other` or `-` (no referrer; no utm_source or one of unknown kind).
const TAGGED: &str = "
# channel     | referrer | source | query string
# Paid media (cpc, ppc, paid, cpa, cpv): paid search, unless the source or the referrer is
# social.
paid_search    | search   | search | utm_source=yandex&utm_medium=cpc&utm_campaign=autumn_sale
# A Yandex Direct click whose referrer was stripped; the yclid agrees.
paid_search    | -        | search | utm_source=yandex&utm_medium=cpc&yclid=8765432101
paid_search    | search   | search | utm_source=google&utm_medium=ppc&gclid=Cj0KCQiA
# utm_medium is case-folded.
paid_search    | -        | search | utm_source=yandex&utm_medium=CPC
paid_search    | -        | search | utm_source=yandex&utm_medium=cpv
# VK Ads, Telegram Ads: the source is social, with or without a referrer.
paid_social    | -        | social | utm_source=vk&utm_medium=cpc
paid_social    | social   | social | utm_source=vk&utm_medium=cpc
paid_social    | -        | social | utm_source=telegram&utm_medium=cpa
# The medium says paid; an fbclid changes nothing.
paid_social    | social   | social | utm_source=facebook&utm_medium=paid&fbclid=IwAR0abc
# No utm_source: a social referrer (an ok.ru ad) makes paid media paid social, a search
# referrer leaves it paid search.
paid_social    | social   | -      | utm_medium=cpc&utm_campaign=retarget
paid_search    | search   | -      | utm_medium=cpc

# E-mail media (email, newsletter), case-folded.
email          | -        | email  | utm_source=unisender&utm_medium=email&utm_campaign=november
email          | email    | -      | utm_medium=newsletter
email          | -        | -      | utm_medium=Email

# Display media (display, banner, cpm, affiliate), whatever the source or referrer.
display        | -        | search | utm_source=yandex&utm_medium=display
display        | -        | -      | utm_source=adfox&utm_medium=banner
display        | -        | -      | utm_source=adriver&utm_medium=cpm
display        | other    | -      | utm_source=admitad&utm_medium=affiliate

# Social media (social, smm): organic social. organic: organic search. referral: referral.
organic_social | social   | social | utm_source=vk&utm_medium=social
organic_social | -        | social | utm_source=telegram&utm_medium=smm
organic_search | -        | search | utm_source=yandex&utm_medium=organic
referral       | other    | -      | utm_source=catalog&utm_medium=referral

# Click ids without utm parameters. yclid (Yandex Direct), gclid (Google Ads) and msclkid
# (Microsoft Ads) mark an ad click: paid search, with or without a referrer.
paid_search    | search   | -      | yclid=8765432101
paid_search    | -        | -      | gclid=Cj0KCQiA
paid_search    | search   | -      | gclid=Cj0KCQiA
paid_search    | search   | -      | msclkid=abc123
# An empty gclid is no click id, and nothing else is left: direct.
direct         | -        | -      | gclid=
# Yandex adds ysclid to organic results: organic search, with or without a referrer.
organic_search | search   | -      | ysclid=lq3x9z2k1m123456789
organic_search | -        | -      | ysclid=lq3x9z2k1m123456789
# Facebook adds fbclid to every outbound link, so it does not mean paid: organic social,
# also when the in-app browser sent no referrer.
organic_social | social   | -      | fbclid=IwAR0abc
organic_social | -        | -      | fbclid=IwAR0abc

# A utm_source of unknown kind, no medium, no referrer: other (tagged, so not direct).
other          | -        | -      | utm_source=partner_blog
other          | -        | -      | utm_source=partner_blog&utm_campaign=spring
";

/// The rows of a table, each split into its trimmed cells.
fn rows(table: &str, cells: usize) -> Vec<Vec<&str>> {
    let rows: Vec<Vec<&str>> = table
        .lines()
        .map(str::trim)
        .filter(|l| !l.is_empty() && !l.starts_with('#'))
        .map(|l| l.split('|').map(str::trim).collect::<Vec<_>>())
        .collect();
    for r in &rows {
        assert_eq!(r.len(), cells, "{r:?}");
        assert!(channel::ALL.contains(&r[0]), "unknown channel in {r:?}");
    }
    rows
}

fn kind(cell: &str) -> Option<HostKind> {
    match cell {
        "-" => None,
        "search" => Some(HostKind::Search),
        "social" => Some(HostKind::Social),
        "email" => Some(HostKind::Email),
        "internal" => Some(HostKind::Internal),
        "other" => Some(HostKind::Other),
        _ => panic!("unknown kind {cell:?}"),
    }
}

#[test]
fn referrers_give_published_host_and_channel() {
    let site_hosts = ["example.ru".to_string(), "www.example.ru".to_string()];
    let mut classifier = ReferrerClassifier::new(&HostLists::builtin(), &site_hosts);
    let rows = rows(REFERRERS, 3);
    assert!(rows.len() >= 30, "{} rows", rows.len());
    let mut wrong = Vec::new();
    for row in rows {
        let (channel, host, referrer) = (row[0], row[1], row[2]);
        let referrer = if referrer == "(empty)" { "" } else { referrer };
        let host = (host != "(none)").then_some(host);
        let info = classifier.classify(referrer.as_bytes());
        let got_host = info.as_ref().map(|i| i.host.to_string());
        let got_channel = channel_of(&Campaign::default(), info.map(|i| i.kind), None);
        if got_host.as_deref() != host || got_channel != channel {
            wrong.push(format!(
                "{referrer:?}: got ({got_host:?}, {got_channel}), expected ({host:?}, {channel})"
            ));
        }
    }
    assert!(wrong.is_empty(), "\n{}", wrong.join("\n"));
}

#[test]
fn tagged_pageviews_give_channel() {
    let mut wrong = Vec::new();
    for row in rows(TAGGED, 4) {
        let (channel, referrer, source, query) = (row[0], kind(row[1]), kind(row[2]), row[3]);
        let got = channel_of(&Campaign::parse(query.as_bytes()), referrer, source);
        if got != channel {
            wrong.push(format!(
                "{query:?} (referrer {referrer:?}, source {source:?}): {got}, expected {channel}"
            ));
        }
    }
    assert!(wrong.is_empty(), "\n{}", wrong.join("\n"));
}
