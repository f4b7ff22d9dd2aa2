//! CONNACK (§3.2): acknowledge flags, reason code, properties.

use super::properties::allowed;
use super::{malformed, put_header, Control, Properties, Reader};
use crate::error::Error;

pub(super) fn decode(r: &mut Reader<'_>) -> Result<Control, Error> {
    let flags = r.u8().ok_or_else(|| malformed("CONNACK", "no flags"))?;
    if flags & 0xfe != 0 {
        return Err(malformed("CONNACK", "reserved flags set")); // [MQTT-3.2.2-1]
    }
    let code = r
        .u8()
        .ok_or_else(|| malformed("CONNACK", "no reason code"))?;
    // A server without MQTT 5 answers a v5 CONNECT with a 3.1.1 CONNACK, return code 1
    // (unacceptable protocol version) and no properties [MQTT-3.1.2-2]: read it as such.
    let props = if r.is_empty() && code != 0 {
        Properties::new()
    } else {
        Properties::read(r, allowed::CONNACK, "CONNACK")?
    };
    Ok(Control::Connack {
        session_present: flags == 1,
        code,
        props,
    })
}

pub(super) fn encode(session_present: bool, code: u8, props: &Properties, out: &mut Vec<u8>) {
    put_header(0x20, 2 + props.wire_len(), out);
    out.push(u8::from(session_present));
    out.push(code);
    props.encode(out);
}

/// Reads a CONNACK: `Ok(session_present)` when accepted, the refusal or the protocol error
/// otherwise.
pub fn parse_connack(packet: &Control) -> Result<bool, Error> {
    match packet {
        Control::Connack {
            session_present,
            code: 0,
            ..
        } => Ok(*session_present),
        Control::Connack { code, props, .. } => {
            if let Some(r) = props.reason() {
                log::warn!(
                    "CONNACK refused with reason code {code:#04x}: {}",
                    crate::error::printable(r)
                );
            }
            Err(Error::ConnectionRefused(crate::error::ConnackCode(*code)))
        }
        other => Err(Error::Protocol(format!(
            "expected CONNACK, got {}",
            other.name()
        ))),
    }
}
