//! Address and URL rules shared by everything that fetches a URL a caller named (client
//! metadata documents, JWKS URIs) or compares URLs byte for byte (resource indicators).

/// Whether the path of a URL, as written in `raw` (before any normalisation), has a `.` or `..`
/// segment, `%2E` counting as a dot (RFC 3986 §6.2.2.2). `url::Url` removes such segments, so
/// the raw text is what must be checked.
pub fn has_dot_segment(raw: &str) -> bool {
    let path = raw
        .split_once("://")
        .map(|(_, rest)| rest.split(['?', '#']).next().unwrap_or_default())
        .and_then(|rest| rest.find('/').map(|i| &rest[i..]))
        .unwrap_or_default();
    path.split('/').any(|seg| {
        let decoded = seg.to_ascii_lowercase().replace("%2e", ".");
        decoded == "." || decoded == ".."
    })
}

/// RFC 6890 special-use ranges (and the IPv6 equivalents), which a fetch on a client's say-so
/// must never reach.
#[allow(clippy::indexing_slicing, reason = "an IPv6 address always has eight segments")]
pub fn special_use_address(ip: std::net::IpAddr) -> bool {
    use std::net::{IpAddr, Ipv4Addr};
    match ip {
        IpAddr::V4(v4) => {
            let [a, b, ..] = v4.octets();
            v4.is_private()
                || v4.is_loopback()
                || v4.is_link_local()
                || v4.is_broadcast()
                || v4.is_documentation()
                || v4.is_unspecified()
                || v4.is_multicast()
                || a == 0
                || a >= 240
                || (a == 100 && (64..128).contains(&b))
                || (a == 192 && b == 0)
                || (a == 198 && (18..20).contains(&b))
        }
        IpAddr::V6(v6) => {
            if let Some(v4) = v6.to_ipv4_mapped() {
                return special_use_address(IpAddr::V4(v4));
            }
            let seg = v6.segments();
            let (first, second) = (seg[0], seg[1]);
            // IPv4-compatible (::a.b.c.d) and NAT64 (64:ff9b::/96) embed an IPv4 address.
            let embedded = Ipv4Addr::new((seg[6] >> 8) as u8, seg[6] as u8, (seg[7] >> 8) as u8, seg[7] as u8);
            let ipv4_compatible = seg[..6].iter().all(|s| *s == 0);
            let nat64 = first == 0x64 && second == 0xff9b && seg[2..6].iter().all(|s| *s == 0);
            v6.is_loopback()
                || v6.is_unspecified()
                || v6.is_multicast()
                || (first & 0xfe00) == 0xfc00 // unique local
                || (first & 0xffc0) == 0xfe80 // link-local
                || (first & 0xffc0) == 0xfec0 // site-local (deprecated)
                || (first == 0x2001 && second == 0x0db8) // documentation
                || (first == 0x2001 && second == 0) // Teredo
                || first == 0x2002 // 6to4
                || ipv4_compatible // deprecated; never a public destination
                || (nat64 && special_use_address(IpAddr::V4(embedded)))
        }
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used, reason = "tests")]
mod tests {
    use super::*;

    #[test]
    fn special_use_addresses_are_refused() {
        for ip in [
            "10.1.2.3",
            "127.0.0.1",
            "169.254.169.254",
            "192.168.1.1",
            "100.64.0.1",
            "0.0.0.0",
            "::1",
            "fd00::1",
            "fe80::1",
            "::ffff:10.0.0.1",
        ] {
            assert!(special_use_address(ip.parse().unwrap()), "{ip}");
        }
        for ip in ["93.184.216.34", "2606:4700::1111"] {
            assert!(!special_use_address(ip.parse().unwrap()), "{ip}");
        }
    }

    #[test]
    fn dot_segments_are_found_in_the_raw_path() {
        for s in [
            "https://a.example/x/../y",
            "https://a.example/./y",
            "https://a.example/%2E%2e/y",
            "https://a.example/y/..",
        ] {
            assert!(has_dot_segment(s), "{s}");
        }
        for s in [
            "https://a.example/.well-known/x",
            "https://a.example/a..b",
            "https://a.example/y?x=/../",
        ] {
            assert!(!has_dot_segment(s), "{s}");
        }
    }
}
