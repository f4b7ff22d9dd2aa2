//! DISCONNECT (§3.14): a reason code and properties, both left out for a normal disconnection.

use super::properties::allowed;
use super::{put_header, put_varint, varint_len, Control, Properties, Reader, ReasonCode};
use crate::error::Error;
use crate::mqtt::MqttVersion;

pub(super) fn decode(r: &mut Reader<'_>, name: &str) -> Result<Control, Error> {
    let code = ReasonCode(if r.is_empty() { 0 } else { r.u8().unwrap_or(0) });
    let props = if r.is_empty() {
        Properties::new()
    } else {
        Properties::read(r, allowed::DISCONNECT, name)?
    };
    Ok(Control::Disconnect { code, props })
}

/// DISCONNECT (`first` 0xe0) or AUTH (0xf0), shortest form.
pub(super) fn encode(first: u8, code: ReasonCode, props: &Properties, out: &mut Vec<u8>) {
    if props.is_empty() && code.0 == 0 {
        put_header(first, 0, out);
    } else if props.is_empty() {
        put_header(first, 1, out);
        out.push(code.0);
    } else {
        put_header(first, 1 + props.wire_len(), out);
        out.push(code.0);
        props.encode(out);
    }
}

/// Appends a normal DISCONNECT of `version` carrying `props` (encoded, without their length;
/// sent in MQTT 5 only).
pub fn encode_disconnect(props: &[u8], version: MqttVersion, out: &mut Vec<u8>) {
    if props.is_empty() || version != MqttVersion::V5 {
        put_header(0xe0, 0, out);
    } else {
        // Reason code 0 (normal disconnection), then the properties.
        put_header(0xe0, 1 + varint_len(props.len()) + props.len(), out);
        out.push(0);
        put_varint(props.len(), out);
        out.extend_from_slice(props);
    }
}
