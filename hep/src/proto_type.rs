//! Protocol type numbers for chunk 0x000B (spec/hep.md §1.3, opensips-tracing.md §1.6).
//!
//! OpenSIPS's own non-standard numbers (mi, rest, net, control) are what Homer setups already map,
//! so heptap uses exactly those.

/// SIP message.
pub const SIP: u8 = 1;
/// XMPP.
pub const XMPP: u8 = 2;
/// SDP.
pub const SDP: u8 = 3;
/// RTP.
pub const RTP: u8 = 4;
/// RTCP (JSON).
pub const RTCP: u8 = 5;
/// MGCP.
pub const MGCP: u8 = 6;
/// MEGACO / H.248.
pub const MEGACO: u8 = 7;
/// M2UA.
pub const M2UA: u8 = 8;
/// M3UA.
pub const M3UA: u8 = 9;
/// IAX.
pub const IAX: u8 = 10;
/// H.322.
pub const H322: u8 = 11;
/// H.321.
pub const H321: u8 = 12;
/// M2PA.
pub const M2PA: u8 = 13;
/// MOS full report (JSON).
pub const MOS_FULL: u8 = 0x22;
/// MOS short report (JSON).
pub const MOS_SHORT: u8 = 0x23;
/// SIP as JSON.
pub const SIP_JSON: u8 = 0x32;
/// DNS (JSON).
pub const DNS_JSON: u8 = 0x35;
/// M3UA / ISUP (JSON).
pub const M3UA_JSON: u8 = 0x36;
/// RTSP (JSON).
pub const RTSP_JSON: u8 = 0x37;
/// DIAMETER (JSON).
pub const DIAMETER_JSON: u8 = 0x38;
/// GSM MAP (JSON).
pub const GSM_MAP_JSON: u8 = 0x39;
/// RTCP PION.
pub const RTCP_PION: u8 = 0x3a;
/// CDR.
pub const CDR: u8 = 0x3c;
/// Verto (also rtpengine's NG control default, which collides with it).
pub const VERTO: u8 = 0x3d;
/// OpenSIPS xlog before 2.4.8 / 3.0.3 (later versions use [`LOG`]); decoded, never emitted.
pub const XLOG_LEGACY: u8 = 0x56;
/// OpenSIPS MI command tracing (non-standard).
pub const MI: u8 = 0x57;
/// OpenSIPS rest_client tracing (non-standard).
pub const REST: u8 = 0x58;
/// OpenSIPS transport events: TCP, TLS, WS, WSS (non-standard).
pub const NET: u8 = 0x59;
/// OpenSIPS `correlate()` control packets (non-standard).
pub const CONTROL: u8 = 0x60;
/// Log lines (Kamailio hlog, OpenSIPS xlog); Homer's "HEP Logs".
pub const LOG: u8 = 100;

/// Short lowercase name of a protocol type, for dumps.
pub fn name(t: u8) -> Option<&'static str> {
    Some(match t {
        SIP => "sip",
        XMPP => "xmpp",
        SDP => "sdp",
        RTP => "rtp",
        RTCP => "rtcp",
        MGCP => "mgcp",
        MEGACO => "megaco",
        M2UA => "m2ua",
        M3UA => "m3ua",
        IAX => "iax",
        H322 => "h322",
        H321 => "h321",
        M2PA => "m2pa",
        MOS_FULL => "mos_full",
        MOS_SHORT => "mos_short",
        SIP_JSON => "sip_json",
        DNS_JSON => "dns",
        M3UA_JSON => "isup",
        RTSP_JSON => "rtsp",
        DIAMETER_JSON => "diameter",
        GSM_MAP_JSON => "gsm_map",
        RTCP_PION => "rtcp_pion",
        CDR => "cdr",
        VERTO => "verto",
        XLOG_LEGACY => "xlog_legacy",
        MI => "mi",
        REST => "rest",
        NET => "net",
        CONTROL => "control",
        LOG => "log",
        _ => return None,
    })
}
