//! Where a CMAF output's content key comes from: a [`ContentKeyProvider`]. Ferrocast's own
//! store makes one ([`ContentKeys`]); a DRM vendor's key server gives one over SPEKE v2
//! ([`Speke`]: CPIX 2.3 documents over HTTP, as AWS MediaPackage speaks to key servers),
//! with the vendor's `pssh` boxes and HLS signalling for Widevine, PlayReady and FairPlay.
//!
//! The request names a key id Ferrocast chose and the DRM systems wanted; the answer holds
//! the key (`pskc:PlainValue`) and, per system, the `pssh` box and HLS `#EXT-X-KEY` line.
//! Everything in the answer is checked before use: the key is 16 bytes, each `pssh` is one
//! well-formed box of its system carrying that key id or none, each HLS line is one
//! `#EXT-X-KEY` line. A vendor key is stored (wrapped) in the content-key store too, so the
//! ClearKey licence, the audit log and key rotation of the master key know it.

use std::future::Future;
use std::pin::Pin;
use std::time::Duration;

use base64::Engine;
use base64::engine::general_purpose::{STANDARD, URL_SAFE_NO_PAD};
use rand::RngCore;

use super::{ContentKeys, Key128};

/// One DRM system's signalling for a key.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DrmSystem {
    pub system_id: [u8; 16],
    /// A whole `pssh` box.
    pub pssh: Vec<u8>,
    /// The vendor's `#EXT-X-KEY` line for media playlists, if it gave one.
    pub hls_key: Option<String>,
}

/// A content key and what players of each DRM system need to find its licence.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ProvidedKey {
    /// Base64url of the 16-byte key id.
    pub id: String,
    pub key: Key128,
    pub systems: Vec<DrmSystem>,
}

pub type ProviderFuture<'a> =
    Pin<Box<dyn Future<Output = anyhow::Result<ProvidedKey>> + Send + 'a>>;

/// Makes the content key of a new output (`scope`: its storage prefix).
pub trait ContentKeyProvider: Send + Sync {
    fn content_key<'a>(&'a self, tenant_id: &'a str, scope: &'a str) -> ProviderFuture<'a>;
}

impl ContentKeyProvider for ContentKeys {
    fn content_key<'a>(&'a self, tenant_id: &'a str, scope: &'a str) -> ProviderFuture<'a> {
        Box::pin(async move {
            let (id, key) = self.create(tenant_id, scope).await?;
            Ok(ProvidedKey {
                id,
                key,
                systems: Vec::new(),
            })
        })
    }
}

pub const WIDEVINE: [u8; 16] = hex_id("edef8ba979d64acea3c827dcd51d21ed");
pub const PLAYREADY: [u8; 16] = hex_id("9a04f07998404286ab92e65be0885f95");
pub const FAIRPLAY: [u8; 16] = hex_id("94ce86fb07ff4f43adb893d2fa968ca2");

const fn hex_id(h: &str) -> [u8; 16] {
    let b = h.as_bytes();
    let mut out = [0u8; 16];
    let mut i = 0;
    while i < 16 {
        let hi = (b[2 * i] as char).to_digit(16).expect("hex") as u8;
        let lo = (b[2 * i + 1] as char).to_digit(16).expect("hex") as u8;
        out[i] = (hi << 4) | lo;
        i += 1;
    }
    out
}

/// `widevine`, `playready`, `fairplay` as system ids.
pub fn system_named(name: &str) -> Option<[u8; 16]> {
    match name.trim() {
        "widevine" => Some(WIDEVINE),
        "playready" => Some(PLAYREADY),
        "fairplay" => Some(FAIRPLAY),
        _ => None,
    }
}

/// A 16-byte id as a UUID string (CPIX writes key and system ids so).
pub fn uuid(id: &[u8; 16]) -> String {
    uuid::Uuid::from_bytes(*id).hyphenated().to_string()
}

fn escape(text: &str) -> String {
    text.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
        .replace('"', "&quot;")
}

/// The CPIX 2.3 request of SPEKE v2 for one key (`cbcs`) and `systems`.
pub fn cpix_request(content_id: &str, kid: &[u8; 16], systems: &[[u8; 16]]) -> String {
    let kid = uuid(kid);
    let mut x = format!(
        "<?xml version=\"1.0\" encoding=\"UTF-8\"?>\n\
         <cpix:CPIX xmlns:cpix=\"urn:dashif:org:cpix\" xmlns:pskc=\"urn:ietf:params:xml:ns:keyprov:pskc\" \
         contentId=\"{}\" version=\"2.3\">\n\
         <cpix:ContentKeyList><cpix:ContentKey kid=\"{kid}\" commonEncryptionScheme=\"cbcs\"/></cpix:ContentKeyList>\n\
         <cpix:DRMSystemList>\n",
        escape(content_id)
    );
    for s in systems {
        x.push_str(&format!(
            "<cpix:DRMSystem kid=\"{kid}\" systemId=\"{}\"><cpix:PSSH/><cpix:ContentProtectionData/>\
             <cpix:HLSSignalingData playlist=\"media\"/><cpix:HLSSignalingData playlist=\"master\"/></cpix:DRMSystem>\n",
            uuid(s)
        ));
    }
    x.push_str(&format!(
        "</cpix:DRMSystemList>\n<cpix:ContentKeyUsageRuleList><cpix:ContentKeyUsageRule kid=\"{kid}\" \
         intendedTrackType=\"ALL\"/></cpix:ContentKeyUsageRuleList>\n</cpix:CPIX>\n"
    ));
    x
}

/// Most bytes of a CPIX answer read (a few KB in practice).
const MAX_ANSWER: usize = 1 << 20;

fn parse_uuid(text: &str) -> Option<[u8; 16]> {
    uuid::Uuid::parse_str(text.trim())
        .ok()
        .map(|u| *u.as_bytes())
}

/// Whether `pssh` is exactly one `pssh` box of `system` naming `kid` (or no key ids).
fn pssh_ok(pssh: &[u8], system: &[u8; 16], kid: &[u8; 16]) -> bool {
    let size = pssh
        .get(..4)
        .map(|b| u32::from_be_bytes([b[0], b[1], b[2], b[3]]) as usize);
    if size != Some(pssh.len())
        || pssh.len() < 32
        || &pssh[4..8] != b"pssh"
        || &pssh[12..28] != system
    {
        return false;
    }
    if pssh[8] == 0 {
        return true;
    }
    let count = pssh
        .get(28..32)
        .map_or(0, |b| u32::from_be_bytes([b[0], b[1], b[2], b[3]]) as usize);
    (0..count.min(64)).any(|i| pssh.get(32 + 16 * i..48 + 16 * i) == Some(kid.as_slice()))
}

/// The key and each system's signalling for `kid`, from a CPIX answer.
pub fn parse_cpix(
    xml: &str,
    kid: &[u8; 16],
    systems: &[[u8; 16]],
) -> Result<(Key128, Vec<DrmSystem>), String> {
    let doc = roxmltree::Document::parse(xml).map_err(|e| format!("not XML: {e}"))?;
    let named = |n: roxmltree::Node, local: &str| n.is_element() && n.tag_name().name() == local;
    let ours = |n: &roxmltree::Node| n.attribute("kid").and_then(parse_uuid) == Some(*kid);
    let content_key = doc
        .descendants()
        .find(|n| named(*n, "ContentKey") && ours(n))
        .ok_or("no ContentKey for the key id asked")?;
    let value = content_key
        .descendants()
        .find(|n| named(*n, "PlainValue"))
        .and_then(|n| n.text())
        .ok_or("the ContentKey has no PlainValue")?;
    let key: Key128 = STANDARD
        .decode(value.trim())
        .ok()
        .and_then(|k| k.try_into().ok())
        .ok_or("the key is not 16 bytes of base64")?;
    let mut found = Vec::new();
    for system in systems {
        let Some(node) = doc.descendants().find(|n| {
            named(*n, "DRMSystem")
                && ours(n)
                && n.attribute("systemId").and_then(parse_uuid) == Some(*system)
        }) else {
            return Err(format!("no DRMSystem {} in the answer", uuid(system)));
        };
        let pssh = node
            .children()
            .find(|n| named(*n, "PSSH"))
            .and_then(|n| n.text())
            .and_then(|t| STANDARD.decode(t.trim()).ok())
            .ok_or_else(|| format!("no PSSH for {}", uuid(system)))?;
        if !pssh_ok(&pssh, system, kid) {
            return Err(format!(
                "the PSSH for {} is not a pssh box of that system and key",
                uuid(system)
            ));
        }
        let hls_key = node
            .children()
            .find(|n| named(*n, "HLSSignalingData") && n.attribute("playlist") != Some("master"))
            .and_then(|n| n.text())
            .filter(|t| !t.trim().is_empty())
            .map(|t| {
                STANDARD
                    .decode(t.trim())
                    .map_err(|_| "HLS signalling that is not base64")
            })
            .transpose()?
            .map(|b| String::from_utf8(b).map_err(|_| "HLS signalling that is not UTF-8"))
            .transpose()?
            .map(|t| t.trim().to_string());
        if let Some(line) = &hls_key
            && (!line.starts_with("#EXT-X-KEY:")
                || line.contains(['\n', '\r'])
                || line.len() > 8192)
        {
            return Err("HLS signalling that is not one #EXT-X-KEY line".into());
        }
        found.push(DrmSystem {
            system_id: *system,
            pssh,
            hls_key,
        });
    }
    Ok((key, found))
}

/// The configured key server (`[licences] speke_url`), if any.
pub fn from_config(
    config: &crate::config::LicencesConfig,
    keys: ContentKeys,
) -> Option<std::sync::Arc<dyn ContentKeyProvider>> {
    if config.speke_url.is_empty() {
        return None;
    }
    let systems = config
        .speke_systems
        .split(',')
        .filter(|n| !n.trim().is_empty())
        .filter_map(system_named)
        .collect();
    Some(std::sync::Arc::new(Speke::new(
        &config.speke_url,
        config.speke_auth_header.expose(),
        systems,
        keys,
    )))
}

/// A SPEKE v2 key server.
pub struct Speke {
    url: String,
    auth_header: Option<(String, String)>,
    systems: Vec<[u8; 16]>,
    keys: ContentKeys,
    client: reqwest::Client,
    /// Waits between tries; a key server that fails them all fails the output.
    retries: Vec<Duration>,
}

impl Speke {
    pub fn new(url: &str, auth_header: &str, systems: Vec<[u8; 16]>, keys: ContentKeys) -> Self {
        Self {
            url: url.to_string(),
            auth_header: auth_header
                .split_once(':')
                .map(|(n, v)| (n.trim().to_string(), v.trim().to_string())),
            systems,
            keys,
            client: reqwest::Client::builder()
                .timeout(Duration::from_secs(10))
                .redirect(reqwest::redirect::Policy::none())
                .build()
                .expect("a client with a timeout builds"),
            retries: vec![Duration::from_millis(500), Duration::from_secs(2)],
        }
    }

    async fn ask(&self, body: &str) -> anyhow::Result<String> {
        let mut request = self
            .client
            .post(&self.url)
            .header("content-type", "application/xml")
            .header("x-speke-version", "2.0")
            .body(body.to_string());
        if let Some((name, value)) = &self.auth_header {
            request = request.header(name, value);
        }
        let answer = request.send().await?;
        let status = answer.status();
        let bytes = answer.bytes().await?;
        if !status.is_success() {
            anyhow::bail!("the key server answered {status}");
        }
        if bytes.len() > MAX_ANSWER {
            anyhow::bail!("the key server's answer is over 1 MiB");
        }
        Ok(String::from_utf8(bytes.to_vec())?)
    }
}

impl ContentKeyProvider for Speke {
    fn content_key<'a>(&'a self, tenant_id: &'a str, scope: &'a str) -> ProviderFuture<'a> {
        Box::pin(async move {
            let mut kid = [0u8; 16];
            rand::rngs::OsRng.fill_bytes(&mut kid);
            let request = cpix_request(scope, &kid, &self.systems);
            let (mut answer, mut failure) = (None, None);
            for wait in std::iter::once(Duration::ZERO).chain(self.retries.iter().copied()) {
                tokio::time::sleep(wait).await;
                match self.ask(&request).await {
                    Ok(a) => {
                        answer = Some(a);
                        break;
                    }
                    Err(e) => {
                        tracing::warn!(url = %self.url, error = %e, "SPEKE key server failed");
                        failure = Some(e);
                    }
                }
            }
            let Some(answer) = answer else {
                let e = failure.map(|e| e.to_string()).unwrap_or_default();
                anyhow::bail!(
                    "SPEKE key server {} failed {} tries: {e}",
                    self.url,
                    self.retries.len() + 1
                );
            };
            let (key, systems) = parse_cpix(&answer, &kid, &self.systems)
                .map_err(|e| anyhow::anyhow!("SPEKE key server {}: {e}", self.url))?;
            let id = URL_SAFE_NO_PAD.encode(kid);
            self.keys.insert(tenant_id, scope, &id, key).await?;
            Ok(ProvidedKey { id, key, systems })
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pssh(system: &[u8; 16], kid: &[u8; 16]) -> Vec<u8> {
        crate::media::cenc::pssh_box(*system, Some(&[*kid]), b"data")
    }

    fn answer(kid: &[u8; 16], key: &str, pssh_box: &[u8], hls: &str) -> String {
        format!(
            "<?xml version=\"1.0\"?><cpix:CPIX xmlns:cpix=\"urn:dashif:org:cpix\" xmlns:pskc=\"urn:ietf:params:xml:ns:keyprov:pskc\" contentId=\"c\">\
             <cpix:ContentKeyList><cpix:ContentKey kid=\"{k}\"><cpix:Data><pskc:Secret><pskc:PlainValue>{key}</pskc:PlainValue></pskc:Secret></cpix:Data></cpix:ContentKey></cpix:ContentKeyList>\
             <cpix:DRMSystemList><cpix:DRMSystem kid=\"{k}\" systemId=\"edef8ba9-79d6-4ace-a3c8-27dcd51d21ed\"><cpix:PSSH>{p}</cpix:PSSH>\
             <cpix:HLSSignalingData playlist=\"media\">{h}</cpix:HLSSignalingData><cpix:HLSSignalingData playlist=\"master\"></cpix:HLSSignalingData></cpix:DRMSystem></cpix:DRMSystemList></cpix:CPIX>",
            k = uuid(kid),
            p = STANDARD.encode(pssh_box),
            h = STANDARD.encode(hls),
        )
    }

    #[test]
    fn a_request_names_the_key_and_systems_and_an_answer_is_read_and_checked() {
        let kid = [0x11; 16];
        let req = cpix_request("tenants/a&b/live/1/", &kid, &[WIDEVINE, PLAYREADY]);
        let doc = roxmltree::Document::parse(&req).unwrap();
        assert!(req.contains("contentId=\"tenants/a&amp;b/live/1/\""));
        assert!(req.contains(
            "kid=\"11111111-1111-1111-1111-111111111111\" commonEncryptionScheme=\"cbcs\""
        ));
        assert_eq!(
            doc.descendants()
                .filter(|n| n.tag_name().name() == "DRMSystem")
                .count(),
            2
        );
        assert!(req.contains("systemId=\"9a04f079-9840-4286-ab92-e65be0885f95\""));

        let key = STANDARD.encode([7u8; 16]);
        let wv = pssh(&WIDEVINE, &kid);
        let line = "#EXT-X-KEY:METHOD=SAMPLE-AES,URI=\"data:text/plain;base64,AAAA\",KEYFORMAT=\"urn:uuid:edef8ba9-79d6-4ace-a3c8-27dcd51d21ed\"";
        let (k, systems) = parse_cpix(&answer(&kid, &key, &wv, line), &kid, &[WIDEVINE]).unwrap();
        assert_eq!(k, [7u8; 16]);
        assert_eq!(
            systems,
            vec![DrmSystem {
                system_id: WIDEVINE,
                pssh: wv.clone(),
                hls_key: Some(line.into())
            }]
        );

        // What a key server must not get away with.
        for (bad, why) in [
            (answer(&[0x22; 16], &key, &wv, line), "ContentKey"),
            (
                answer(&kid, &STANDARD.encode([7u8; 15]), &wv, line),
                "16 bytes",
            ),
            (
                answer(&kid, &key, &pssh(&PLAYREADY, &kid), line),
                "pssh box",
            ),
            (
                answer(&kid, &key, &pssh(&WIDEVINE, &[0x33; 16]), line),
                "pssh box",
            ),
            (answer(&kid, &key, &wv[..wv.len() - 1], line), "pssh box"),
            (
                answer(&kid, &key, &wv, "#EXT-X-KEY:A\n#EXT-X-ENDLIST"),
                "one #EXT-X-KEY",
            ),
            (answer(&kid, &key, &wv, "#EXTINF:1,"), "one #EXT-X-KEY"),
            ("<cpix:CPIX".into(), "not XML"),
        ] {
            let e = parse_cpix(&bad, &kid, &[WIDEVINE]).unwrap_err();
            assert!(e.contains(why), "{why}: {e}");
        }
        let e =
            parse_cpix(&answer(&kid, &key, &wv, line), &kid, &[WIDEVINE, PLAYREADY]).unwrap_err();
        assert!(e.contains("no DRMSystem 9a04f079"), "{e}");
    }
}
