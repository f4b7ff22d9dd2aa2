//! AUTH (§3.15): decoded so that a server starting extended authentication gets a clear
//! error (the client never asks for it).

use super::properties::allowed;
use super::{Control, Properties, Reader, ReasonCode};
use crate::error::Error;

pub(super) fn decode(r: &mut Reader<'_>) -> Result<Control, Error> {
    let code = ReasonCode(if r.is_empty() { 0 } else { r.u8().unwrap_or(0) });
    let props = if r.is_empty() {
        Properties::new()
    } else {
        Properties::read(r, allowed::AUTH, "AUTH")?
    };
    Ok(Control::Auth { code, props })
}
