//! Browser, OS and device type from a `User-Agent`, for the view's dimensions. Only these
//! three coarse names are kept, never the string itself.

/// `(browser, os, device type)`; `"other"` where the agent says nothing known.
pub fn parse(user_agent: &str) -> (&'static str, &'static str, &'static str) {
    let ua = user_agent;
    let has = |s: &str| ua.contains(s);
    // Order matters: Edge and Opera say Chrome, Chrome says Safari.
    let browser = if has("Edg/") {
        "Edge"
    } else if has("OPR/") {
        "Opera"
    } else if has("Firefox/") {
        "Firefox"
    } else if has("Chrome/") || has("Chromium/") || has("CriOS/") {
        "Chrome"
    } else if has("Safari/") && has("Version/") {
        "Safari"
    } else if has("Lavf/") {
        "FFmpeg"
    } else if has("VLC/") {
        "VLC"
    } else {
        "other"
    };
    let os = if has("Android") {
        "Android"
    } else if has("iPhone") || has("iPad") || has("iPod") {
        "iOS"
    } else if has("Windows") {
        "Windows"
    } else if has("Mac OS X") || has("Macintosh") {
        "macOS"
    } else if has("CrOS") {
        "ChromeOS"
    } else if has("Linux") {
        "Linux"
    } else {
        "other"
    };
    let device = if has("SmartTV") || has("SMART-TV") || has("Tizen") || has("Web0S") {
        "tv"
    } else if has("iPad") || (has("Android") && !has("Mobile")) {
        "tablet"
    } else if has("Mobile") || has("iPhone") {
        "phone"
    } else if browser == "other" && os == "other" {
        "other"
    } else {
        "desktop"
    };
    (browser, os, device)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn common_agents() {
        let cases = [
            (
                "Mozilla/5.0 (X11; Linux x86_64) AppleWebKit/537.36 (KHTML, like Gecko) HeadlessChrome/120.0.0.0 Safari/537.36",
                ("Chrome", "Linux", "desktop"),
            ),
            (
                "Mozilla/5.0 (iPhone; CPU iPhone OS 17_0 like Mac OS X) AppleWebKit/605.1.15 (KHTML, like Gecko) Version/17.0 Mobile/15E148 Safari/604.1",
                ("Safari", "iOS", "phone"),
            ),
            (
                "Mozilla/5.0 (Windows NT 10.0; Win64; x64) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/120.0 Safari/537.36 Edg/120.0",
                ("Edge", "Windows", "desktop"),
            ),
            (
                "Mozilla/5.0 (Linux; Android 14; SM-X710) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/120.0 Safari/537.36",
                ("Chrome", "Android", "tablet"),
            ),
            ("Lavf/59.27.100", ("FFmpeg", "other", "desktop")),
            ("", ("other", "other", "other")),
        ];
        for (ua, want) in cases {
            assert_eq!(parse(ua), want, "{ua}");
        }
    }
}
