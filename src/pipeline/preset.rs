//! Ladder presets (`pipelines/*.toml`, embedded at build time). Which renditions a given
//! source gets (never upscaled, aspect ratio kept) is decided by `ladder::plan`.

use std::collections::BTreeMap;

use serde::Deserialize;

/// The presets shipped in `pipelines/`.
const EMBEDDED: &[(&str, &str)] = &[
    ("default", include_str!("../../pipelines/default.toml")),
    (
        "passthrough",
        include_str!("../../pipelines/passthrough.toml"),
    ),
    ("web", include_str!("../../pipelines/web.toml")),
];

#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Preset {
    pub segment_duration_s: u32,
    pub passthrough: bool,
    pub x264_preset: String,
    #[serde(default, rename = "rendition")]
    pub renditions: Vec<RenditionSpec>,
    /// A WebM (VP9/Opus) download for on-demand assets, when the preset asks for one.
    #[serde(default)]
    pub webm: Option<WebmSpec>,
    /// How live streams and uploads of this preset are packaged unless they say (`ts`,
    /// `cmaf` or `both`).
    #[serde(default)]
    pub packaging: crate::media::Packaging,
    /// The common-encryption scheme of CMAF output (`cbcs` or `cenc`).
    #[serde(default)]
    pub cenc_scheme: crate::media::cenc::Scheme,
}

#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct WebmSpec {
    pub height: u32,
    pub video_bitrate_kbps: u32,
}

#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RenditionSpec {
    pub name: String,
    pub height: u32,
    pub video_bitrate_kbps: u32,
    pub profile: String,
}

/// All presets by name.
#[derive(Debug, Clone)]
pub struct Presets(BTreeMap<String, Preset>);

impl Presets {
    /// Parses the embedded presets; a broken preset is a build defect, caught by the tests.
    pub fn embedded() -> Self {
        Self(
            EMBEDDED
                .iter()
                .map(|(name, text)| {
                    let preset =
                        parse(text).unwrap_or_else(|e| panic!("pipelines/{name}.toml: {e}"));
                    (name.to_string(), preset)
                })
                .collect(),
        )
    }

    pub fn get(&self, name: &str) -> Option<&Preset> {
        self.0.get(name)
    }

    pub fn names(&self) -> impl Iterator<Item = &str> {
        self.0.keys().map(String::as_str)
    }
}

/// Parses and checks one preset.
pub fn parse(text: &str) -> Result<Preset, String> {
    let preset: Preset = toml::from_str(text).map_err(|e| e.message().to_string())?;
    if !(1..=10).contains(&preset.segment_duration_s) {
        return Err("segment_duration_s must be 1 to 10".into());
    }
    if !preset.passthrough && preset.renditions.is_empty() {
        return Err("a ladder needs passthrough or at least one rendition".into());
    }
    const SPEEDS: &[&str] = &[
        "ultrafast",
        "superfast",
        "veryfast",
        "faster",
        "fast",
        "medium",
        "slow",
        "slower",
        "veryslow",
    ];
    if !SPEEDS.contains(&preset.x264_preset.as_str()) {
        return Err(format!(
            "x264_preset {:?} is not an x264 preset",
            preset.x264_preset
        ));
    }
    let mut names = std::collections::HashSet::new();
    for r in &preset.renditions {
        // "audio" is the CMAF output's audio track.
        if !names.insert(&r.name) || r.name == "source" || r.name == "audio" {
            return Err(format!(
                "rendition name {:?} is used twice or reserved",
                r.name
            ));
        }
        if !r
            .name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '-')
        {
            return Err(format!(
                "rendition name {:?} must be letters, digits, - or _",
                r.name
            ));
        }
        if r.height < 64 || r.height > 4320 || r.height % 2 != 0 {
            return Err(format!(
                "rendition {}: height must be even, 64 to 4320",
                r.name
            ));
        }
        if !["baseline", "main", "high"].contains(&r.profile.as_str()) {
            return Err(format!(
                "rendition {}: profile must be baseline, main or high",
                r.name
            ));
        }
        if r.video_bitrate_kbps < 64 {
            return Err(format!(
                "rendition {}: video_bitrate_kbps must be at least 64",
                r.name
            ));
        }
    }
    Ok(preset)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn embedded_presets_parse() {
        let presets = Presets::embedded();
        assert_eq!(
            presets.names().collect::<Vec<_>>(),
            ["default", "passthrough", "web"]
        );
        assert_eq!(
            presets.get("web").unwrap().webm.as_ref().map(|w| w.height),
            Some(720)
        );
        assert_eq!(presets.get("default").unwrap().webm, None);
        let d = presets.get("default").unwrap();
        assert!(d.passthrough);
        assert_eq!(d.segment_duration_s, 2);
        assert_eq!(d.renditions.len(), 4);
    }

    #[test]
    fn bad_presets_are_refused_with_a_reason() {
        let base = "segment_duration_s = 2\npassthrough = true\nx264_preset = \"veryfast\"\n";
        assert!(parse(base).is_ok());
        assert!(
            parse(&base.replace("= 2", "= 0"))
                .unwrap_err()
                .contains("segment_duration_s")
        );
        assert!(
            parse(&base.replace("veryfast", "warp"))
                .unwrap_err()
                .contains("x264")
        );
        assert!(
            parse(&base.replace("true", "false"))
                .unwrap_err()
                .contains("passthrough")
        );
        let odd = format!(
            "{base}[[rendition]]\nname = \"a\"\nheight = 721\nvideo_bitrate_kbps = 900\nprofile = \"main\"\n"
        );
        assert!(parse(&odd).unwrap_err().contains("even"));
        let dup = format!(
            "{base}[[rendition]]\nname = \"a\"\nheight = 720\nvideo_bitrate_kbps = 900\nprofile = \"main\"\n[[rendition]]\nname = \"a\"\nheight = 360\nvideo_bitrate_kbps = 500\nprofile = \"main\"\n"
        );
        assert!(parse(&dup).unwrap_err().contains("twice"));
        assert!(parse(&format!("{base}colour = 1\n")).is_err());
    }
}
