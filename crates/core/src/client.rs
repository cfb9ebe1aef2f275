//! Where a call with a token came from: the client's address and user
//! agent, as the service that saw the call says.

use std::net::IpAddr;

use crate::field::FieldError;

/// How many distinct addresses a token remembers.
pub const RECENT_IPS: usize = 5;
/// The longest user agent kept, in bytes.
pub const MAX_USER_AGENT_BYTES: usize = 512;

/// Where a use came from, as the service that saw it says.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Client {
    pub ip: Option<IpAddr>,
    pub user_agent: String,
}

/// A client as a call names it, borrowed from the request: what a use
/// notes (copied only when it differs from the token's last client).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ClientRef<'a> {
    pub ip: Option<IpAddr>,
    pub user_agent: &'a str,
}

impl ClientRef<'_> {
    pub fn to_client(self) -> Client {
        Client {
            ip: self.ip,
            user_agent: self.user_agent.to_owned(),
        }
    }
}

impl Client {
    pub fn view(&self) -> ClientRef<'_> {
        ClientRef {
            ip: self.ip,
            user_agent: &self.user_agent,
        }
    }

    /// [`Client::seen`], borrowing `user_agent` when it needs no cleaning
    /// (the usual case), else the cleaned copy it puts in `cleaned`.
    pub fn seen_in<'a>(
        ip: Option<IpAddr>,
        user_agent: &'a str,
        cleaned: &'a mut Option<Client>,
    ) -> Option<ClientRef<'a>> {
        let clean = user_agent.len() <= MAX_USER_AGENT_BYTES
            && (user_agent.bytes().all(|b| (0x20..0x7f).contains(&b))
                || !user_agent.chars().any(char::is_control));
        if clean {
            return (ip.is_some() || !user_agent.is_empty())
                .then_some(ClientRef { ip, user_agent });
        }
        *cleaned = Client::seen(ip, user_agent);
        cleaned.as_ref().map(Client::view)
    }

    /// A client as a caller gives it (`client.ip`, `client.user_agent`);
    /// `None` if both are empty.
    ///
    /// # Errors
    /// An address that does not read, or a user agent over
    /// [`MAX_USER_AGENT_BYTES`] or with control characters.
    pub fn given(field: &str, ip: &str, user_agent: String) -> Result<Option<Self>, FieldError> {
        let ip = match ip {
            "" => None,
            ip => Some(ip.parse().map_err(|_| {
                FieldError::new(
                    format!("{field}.ip"),
                    "not an IPv4 or IPv6 address".to_owned(),
                )
            })?),
        };
        if user_agent.len() > MAX_USER_AGENT_BYTES || user_agent.chars().any(char::is_control) {
            return Err(FieldError::new(
                format!("{field}.user_agent"),
                format!("at most {MAX_USER_AGENT_BYTES} bytes, without control characters"),
            ));
        }
        Ok((ip.is_some() || !user_agent.is_empty()).then_some(Client { ip, user_agent }))
    }

    /// The address (empty if unknown) and user agent of `client`, as the
    /// API and the store write them; both empty for none.
    pub fn as_text(client: Option<&Self>) -> (String, String) {
        client.map_or_else(Default::default, |c| {
            (
                c.ip.map_or_else(String::new, |ip| ip.to_string()),
                c.user_agent.clone(),
            )
        })
    }

    /// A client as a proxy saw it (Envoy's CheckRequest): a user agent too
    /// long is cut and control characters dropped, since the end user
    /// chose it and a check must not fail for it.
    pub fn seen(ip: Option<IpAddr>, user_agent: &str) -> Option<Self> {
        let mut kept = String::with_capacity(user_agent.len().min(MAX_USER_AGENT_BYTES));
        for c in user_agent.chars().filter(|c| !c.is_control()) {
            if kept.len() + c.len_utf8() > MAX_USER_AGENT_BYTES {
                break;
            }
            kept.push(c);
        }
        (ip.is_some() || !kept.is_empty()).then_some(Client {
            ip,
            user_agent: kept,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_client_given_by_a_caller_is_checked_and_one_seen_by_a_proxy_is_cleaned() {
        assert_eq!(Client::given("client", "", String::new()), Ok(None));
        assert_eq!(
            Client::given("client", "2001:db8::7", "curl/8".into()).unwrap(),
            Some(Client {
                ip: Some("2001:db8::7".parse().unwrap()),
                user_agent: "curl/8".into()
            })
        );
        for (ip, ua, field) in [
            ("192.0.2", "", "client.ip"),
            ("192.0.2.1 ", "", "client.ip"),
            ("", "a\nb", "client.user_agent"),
            ("", &"u".repeat(513), "client.user_agent"),
        ] {
            assert_eq!(
                Client::given("client", ip, ua.to_owned())
                    .unwrap_err()
                    .field,
                field
            );
        }
        let seen = Client::seen(None, &format!("a\u{7}b{}", "é".repeat(400))).unwrap();
        assert!(seen.user_agent.starts_with("ab") && seen.user_agent.len() <= 512);
        assert_eq!(Client::seen(None, "\u{1}"), None);
        // Borrowed when clean, cleaned the same way when not.
        for ua in [
            "curl/8",
            "",
            "\u{1}",
            "ünïcode/1",
            &format!("a\u{7}b{}", "é".repeat(400)),
        ] {
            let ip = Some("192.0.2.1".parse().unwrap());
            let mut spare = None;
            assert_eq!(
                Client::seen_in(ip, ua, &mut spare).map(ClientRef::to_client),
                Client::seen(ip, ua),
                "{ua:?}"
            );
        }
    }
}
