//! CMCD (CTA-5004): what a player says about itself on each media request, in the `CMCD`
//! query parameter or the `CMCD-*` headers. Keys are read as the spec types them (numbers,
//! quoted strings, tokens, bare booleans); unknown keys are skipped; every value is bounded.
//! A request's CMCD never changes how it is authorized or cached: it is only observed.

/// The keys Ferrocast uses.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Cmcd {
    /// Session id: the view (`sid`).
    pub sid: Option<String>,
    /// Content id (`cid`).
    pub cid: Option<String>,
    /// Encoded bitrate, kbps (`br`).
    pub br: Option<u64>,
    /// Buffer length, ms (`bl`).
    pub bl: Option<u64>,
    /// Buffer starvation since the last request (`bs`).
    pub bs: bool,
    /// Measured throughput, kbps (`mtp`).
    pub mtp: Option<u64>,
    /// Object type: `m` manifest, `a` audio, `v` video, `av` muxed, `i` init, `c` caption,
    /// `tt` timed text, `k` key, `o` other (`ot`).
    pub ot: Option<String>,
    /// Startup: the object is needed to start or resume (`su`).
    pub su: bool,
    /// Stream type: `v` VOD, `l` live (`st`).
    pub st: Option<String>,
    /// Object duration, ms (`d`).
    pub d: Option<u64>,
    /// CMCD v2 event reports: the event (`e`), its time in ms since the epoch (`ts`), its
    /// sequence number (`sn`), the player state (`sta`) and the playhead, ms (`pt`).
    pub e: Option<String>,
    pub ts: Option<u64>,
    pub sn: Option<u64>,
    pub sta: Option<String>,
    pub pt: Option<u64>,
}

/// Bytes of CMCD data read at most: the spec's keys fit in far less.
const MAX_LEN: usize = 2048;

/// Reads the CMCD of one request from its `CMCD` query value (already URL-decoded) and its
/// `CMCD-Request`, `CMCD-Object`, `CMCD-Status` and `CMCD-Session` header values.
pub fn parse<'a>(parts: impl IntoIterator<Item = &'a str>) -> Option<Cmcd> {
    let mut c = Cmcd::default();
    let mut any = false;
    for part in parts {
        if part.len() > MAX_LEN {
            continue;
        }
        for pair in part.split(',') {
            let (key, value) = match pair.split_once('=') {
                Some((k, v)) => (k.trim(), Some(v.trim())),
                None => (pair.trim(), None),
            };
            any = true;
            let number = || value.and_then(|v| v.parse::<u64>().ok());
            // v2 sends some numbers as an inner list, `(3200)`: its first.
            let first = || {
                value.and_then(|v| {
                    let v = v.strip_prefix('(').map_or(v, |v| v.trim_end_matches(')'));
                    v.split(' ').next()?.parse::<u64>().ok()
                })
            };
            let string = || {
                value
                    .and_then(|v| v.strip_prefix('"')?.strip_suffix('"'))
                    .filter(|s| s.len() <= 64 && !s.contains(['"', '\\']))
                    .map(str::to_string)
            };
            let token = || {
                value
                    .filter(|v| v.len() <= 4 && v.bytes().all(|b| b.is_ascii_lowercase()))
                    .map(str::to_string)
            };
            let flag = || value.is_none_or(|v| v != "false");
            match key {
                "sid" => c.sid = string(),
                "cid" => c.cid = string(),
                "br" => c.br = first(),
                "bl" => c.bl = number(),
                "bs" => c.bs = flag(),
                "mtp" => c.mtp = number(),
                "ot" => c.ot = token(),
                "su" => c.su = flag(),
                "st" => c.st = token(),
                "d" => c.d = number(),
                "e" => c.e = token(),
                "ts" => c.ts = number(),
                "sn" => c.sn = number(),
                "sta" => c.sta = token(),
                "pt" => c.pt = number(),
                _ => {}
            }
        }
    }
    any.then_some(c)
}

/// What a view's CMCD said, summed over its requests.
#[derive(Debug, Clone, Default, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct CmcdTotals {
    pub requests: u64,
    /// Requests that reported a buffer starvation.
    pub buffer_starvations: u64,
    /// Media time requested in video (or muxed) segments, ms.
    pub media_ms: u64,
    /// Mean of the measured throughputs reported, kbps, over this many reports.
    pub mean_throughput_kbps: Option<f64>,
    pub throughput_reports: u64,
    /// Highest encoded bitrate requested, kbps.
    pub max_encoded_bitrate_kbps: Option<u64>,
    /// Key requests naming the view that the key server granted, and that it refused with
    /// 403 (policy, entitlement, country).
    #[serde(default)]
    pub keys_granted: u64,
    #[serde(default)]
    pub keys_forbidden: u64,
}

impl CmcdTotals {
    /// Adds the totals of other requests of the same view (stored before a restart).
    pub fn merge(&mut self, o: &CmcdTotals) {
        let n = self.throughput_reports + o.throughput_reports;
        if n > 0 {
            let sum = self.mean_throughput_kbps.unwrap_or(0.0) * self.throughput_reports as f64
                + o.mean_throughput_kbps.unwrap_or(0.0) * o.throughput_reports as f64;
            self.mean_throughput_kbps = Some(sum / n as f64);
        }
        self.requests += o.requests;
        self.buffer_starvations += o.buffer_starvations;
        self.media_ms += o.media_ms;
        self.keys_granted += o.keys_granted;
        self.keys_forbidden += o.keys_forbidden;
        self.throughput_reports = n;
        self.max_encoded_bitrate_kbps = self
            .max_encoded_bitrate_kbps
            .max(o.max_encoded_bitrate_kbps);
    }

    pub fn add(&mut self, c: &Cmcd) {
        self.requests += 1;
        self.buffer_starvations += u64::from(c.bs);
        if matches!(c.ot.as_deref(), Some("v" | "av")) {
            self.media_ms += c.d.unwrap_or(0).min(60_000);
        }
        if let Some(mtp) = c.mtp {
            let n = self.throughput_reports as f64;
            let mean = self.mean_throughput_kbps.unwrap_or(0.0);
            self.mean_throughput_kbps = Some((mean * n + mtp as f64) / (n + 1.0));
            self.throughput_reports += 1;
        }
        if let Some(br) = c.br {
            self.max_encoded_bitrate_kbps =
                Some(self.max_encoded_bitrate_kbps.unwrap_or(0).max(br));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn query_and_header_forms_read_alike() {
        let query =
            r#"bl=21300,br=3200,bs,cid="pb1",d=4004,mtp=25400,ot=v,sid="6e2fb550c4574ed8",st=v,su"#;
        let c = parse([query]).unwrap();
        assert_eq!(c.sid.as_deref(), Some("6e2fb550c4574ed8"));
        assert_eq!(c.cid.as_deref(), Some("pb1"));
        assert_eq!(
            (c.br, c.bl, c.mtp, c.d),
            (Some(3200), Some(21300), Some(25400), Some(4004))
        );
        assert!(c.bs && c.su);
        assert_eq!((c.ot.as_deref(), c.st.as_deref()), (Some("v"), Some("v")));
        let headers = parse([
            "bl=21300,mtp=25400,su",
            "br=3200,d=4004,ot=v",
            "bs",
            r#"cid="pb1",sid="6e2fb550c4574ed8",st=v"#,
        ])
        .unwrap();
        assert_eq!(headers, c);
    }

    #[test]
    fn bad_values_are_skipped_and_sizes_bounded() {
        let c = parse([r#"br=lots,sid=unquoted,ot=VIDEO,cid="a\"b",x=1"#]).unwrap();
        assert_eq!(c, Cmcd::default());
        assert!(parse([&"a".repeat(MAX_LEN + 1)[..]]).is_none());
        assert!(parse(Vec::<&str>::new()).is_none());
    }

    #[test]
    fn totals_sum_a_views_requests() {
        let mut t = CmcdTotals::default();
        for q in [
            r#"ot=v,d=4000,mtp=1000,br=800"#,
            r#"ot=v,d=4000,mtp=3000,br=3200,bs"#,
            "ot=m",
        ] {
            t.add(&parse([q]).unwrap());
        }
        assert_eq!((t.requests, t.buffer_starvations, t.media_ms), (3, 1, 8000));
        assert_eq!(t.mean_throughput_kbps, Some(2000.0));
        assert_eq!(t.max_encoded_bitrate_kbps, Some(3200));
    }
}
