//! Transports beyond one WebSocket URL: one TLS record per frame over `wss://`, AWS IoT device
//! certificates (8883, and 443 with ALPN), HTTP CONNECT proxies (explicit and from the
//! environment), and several URLs per provider (a dead address skipped, a NATS cluster node
//! killed under a QoS 1 stream).

use std::time::Duration;

use mqtt_pubsub::{ConnectionState, Error, MqttOverWsProvider, PubSub, StateEvent};

use crate::support::connect_proxy::ConnectProxy;
use crate::support::{assert_roundtrip, child_env, free_port, run_child, Mosquitto};

const WAIT: Duration = Duration::from_secs(20);

/// The next state event of `state`, skipping others.
fn wait_state(rx: &crossbeam_channel::Receiver<StateEvent>, state: ConnectionState) -> StateEvent {
    loop {
        let e = rx.recv_timeout(WAIT).expect("a state event");
        if e.state == state {
            return e;
        }
    }
}

/// Each WebSocket frame goes out as one TLS record. Our frame header and payload used to
/// be two records (a vectored write: rustls seals each slice alone), and mosquitto's TLS
/// WebSocket listener waits a turn of its event loop (100 ms when idle) between them: every
/// small message took 100 ms. The median of 21 sequential round trips is far below that now
/// (about 0.1 ms); the bound leaves room for a loaded machine, not for the old delay.
#[test]
fn wss_round_trips_to_mosquitto_do_not_wait_for_its_event_loop() {
    let Some(m) = Mosquitto::start() else { return };
    let ps = PubSub::new();
    ps.add_provider(
        MqttOverWsProvider::builder(m.wss_url())
            .ca_pem(m.ca_pem.clone())
            .build()
            .unwrap(),
    )
    .unwrap();
    let sub = ps.subscribe("wss/rt").unwrap();
    // Waiting for a turn of mosquitto's loop costs up to 100 ms a round trip (~50 ms on
    // average): 400 round trips would take ~20 s. A loaded machine needs a few ms each.
    let t = std::time::Instant::now();
    for i in 0..400 {
        ps.publish("wss/rt", format!("{i}")).unwrap();
        sub.recv_timeout(WAIT).unwrap();
    }
    assert!(
        t.elapsed() < Duration::from_secs(8),
        "400 round trips took {:?}",
        t.elapsed()
    );
}

#[cfg(feature = "aws-iot")]
mod aws_certificate {
    use super::*;
    use crate::support::tls_gateway::{Hello, TlsGateway};
    use crate::support::{make_certs, TempDir};
    use mqtt_pubsub::aws::StaticCredentials;
    use mqtt_pubsub::AwsIotProvider;

    fn gateway() -> Option<(Mosquitto, TlsGateway, crate::support::Certs, TempDir)> {
        let m = Mosquitto::start()?;
        let dir = TempDir::new("aws-cert");
        let certs = make_certs(dir.path());
        let gw = TlsGateway::start(&certs, m.tcp_port);
        Some((m, gw, certs, dir))
    }

    /// Port-443 mode offers exactly `x-amzn-mqtt-ca`; a round trip completes through the
    /// gateway (which needs the client certificate) to mosquitto.
    #[test]
    fn port_443_mode_offers_exactly_the_aws_alpn_and_a_round_trip_completes() {
        let Some((_m, gw, certs, _dir)) = gateway() else {
            return;
        };
        let (cert, key) = certs.client();
        let ps = PubSub::new();
        ps.add_provider(
            // A loopback gateway cannot bind 443: `alpn(true)` is what `port(443)` implies.
            AwsIotProvider::builder(format!("mqtts://localhost:{}", gw.port))
                .client_certificate(cert, key)
                .alpn(true)
                .ca_pem(certs.ca_pem.clone())
                .client_id("device-443")
                .build()
                .unwrap(),
        )
        .unwrap();
        assert_roundtrip(&ps, "devices/d443/telemetry");
        ps.close().unwrap();
        let hellos = gw.hellos();
        assert_eq!(
            hellos,
            vec![Hello {
                alpn: vec!["x-amzn-mqtt-ca".into()],
                completed: true,
                credentials: None,
            }]
        );
    }

    #[test]
    fn port_8883_mode_offers_no_alpn_and_the_certificate_is_required() {
        let Some((_m, gw, certs, _dir)) = gateway() else {
            return;
        };
        let (cert, key) = certs.client();
        let ps = PubSub::new();
        ps.add_provider(
            AwsIotProvider::builder(format!("mqtts://localhost:{}", gw.port))
                .client_certificate(cert, key)
                .ca_pem(certs.ca_pem.clone())
                .build()
                .unwrap(),
        )
        .unwrap();
        assert_roundtrip(&ps, "devices/d8883/telemetry");
        ps.close().unwrap();
        assert_eq!(gw.hellos()[0].alpn, Vec::<String>::new());
        assert!(gw.hellos()[0].completed);
        // The same gateway without a client certificate: refused in the handshake.
        let err = PubSub::new()
            .add_provider(
                MqttOverWsProvider::builder(format!("mqtts://localhost:{}", gw.port))
                    .ca_pem(certs.ca_pem.clone())
                    .connect_timeout(Duration::from_secs(5))
                    .build()
                    .unwrap(),
            )
            .unwrap_err();
        assert!(
            matches!(
                &err,
                Error::Tls { .. } | Error::Io { .. } | Error::ConnectionLost(_)
            ),
            "{err:?}"
        );
        assert!(!gw.hellos()[1].completed, "{:?}", gw.hellos());
    }

    /// Certificate mode with the identity inside the user's own rustls configuration (a key
    /// an HSM holds, behind rustls's client-certificate resolver): offers AWS's ALPN on 443 and
    /// completes a round trip through the gateway that requires the certificate. Mixing the
    /// configuration with `client_certificate` names `client_certificate`. Before: there was
    /// no way into certificate mode without PEM, and the conflict named `client_cert_pem`.
    #[test]
    fn certificate_mode_takes_the_identity_from_a_user_tls_config() {
        use mqtt_pubsub::rustls;
        use rustls::pki_types::pem::PemObject;
        use rustls::pki_types::{CertificateDer, PrivateKeyDer};
        let Some((_m, gw, certs, dir)) = gateway() else {
            return;
        };
        let mut roots = rustls::RootCertStore::empty();
        for c in CertificateDer::pem_slice_iter(&certs.ca_pem) {
            roots.add(c.unwrap()).unwrap();
        }
        let chain = CertificateDer::pem_file_iter(dir.path().join("client.crt"))
            .unwrap()
            .map(Result::unwrap)
            .collect();
        let key = PrivateKeyDer::from_pem_file(dir.path().join("client.key")).unwrap();
        let config = rustls::ClientConfig::builder_with_provider(std::sync::Arc::new(
            rustls::crypto::ring::default_provider(),
        ))
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_root_certificates(roots)
        .with_client_auth_cert(chain, key)
        .unwrap();
        let config = std::sync::Arc::new(config);
        let ps = PubSub::new();
        ps.add_provider(
            AwsIotProvider::builder(format!("mqtts://localhost:{}", gw.port))
                .tls_config(config.clone())
                .client_certificate_in_tls_config()
                .alpn(true)
                .client_id("device-hsm")
                .build()
                .unwrap(),
        )
        .unwrap();
        assert_roundtrip(&ps, "devices/hsm/telemetry");
        ps.close().unwrap();
        let hello = &gw.hellos()[0];
        assert!(hello.completed, "{hello:?}");
        assert_eq!(hello.alpn, vec!["x-amzn-mqtt-ca".to_string()]);
        let (cert, key) = certs.client();
        let err = AwsIotProvider::builder(format!("mqtts://localhost:{}", gw.port))
            .tls_config(config)
            .client_certificate(cert, key)
            .build()
            .unwrap_err()
            .to_string();
        assert!(
            err.contains("client_certificate") && !err.contains("client_cert_pem"),
            "{err}"
        );
        let err = AwsIotProvider::builder(format!("mqtts://localhost:{}", gw.port))
            .client_certificate_in_tls_config()
            .build()
            .unwrap_err()
            .to_string();
        assert!(err.contains("tls_config("), "{err}");
    }

    /// `mqtt-pub --aws-iot` as a device (`--cert --key --cafile`) through the gateway that
    /// requires the certificate, and `mqtt-sub --aws-iot` receiving it there; `--aws-iot`
    /// with `-L` is refused.
    #[test]
    fn the_tools_speak_to_aws_iot_with_a_device_certificate() {
        let Some((m, gw, _certs, dir)) = gateway() else {
            return;
        };
        let file = |f: &str| dir.path().join(f).display().to_string();
        let endpoint = format!("mqtts://localhost:{}", gw.port);
        let device = [
            "--aws-iot".to_string(),
            endpoint.clone(),
            "--cert".into(),
            file("client.crt"),
            "--key".into(),
            file("client.key"),
            "--cafile".into(),
            file("ca.crt"),
        ];
        let sub = std::process::Command::new(crate::tools::ours("sub"))
            .args(&device)
            .args([
                "-i",
                "tool-sub",
                "-t",
                "devices/tool",
                "-C",
                "1",
                "-v",
                "-W",
                "20",
            ])
            .stdout(std::process::Stdio::piped())
            .spawn()
            .unwrap();
        // The subscriber is in once the gateway has seen it connect and mosquitto has its
        // SUBSCRIBE: publish retained so that the order does not matter.
        let out = std::process::Command::new(crate::tools::ours("pub"))
            .args(&device)
            .args([
                "-i",
                "tool-pub",
                "-t",
                "devices/tool",
                "-m",
                "via AWS mode",
                "-r",
                "-q",
                "1",
            ])
            .output()
            .unwrap();
        assert!(out.status.success(), "{out:?}");
        let got = sub.wait_with_output().unwrap();
        assert!(got.status.success(), "{got:?}");
        assert_eq!(
            String::from_utf8_lossy(&got.stdout),
            "devices/tool via AWS mode\n"
        );
        assert!(gw.hellos().iter().all(|h| h.completed));
        let both = std::process::Command::new(crate::tools::ours("pub"))
            .args([
                "--aws-iot",
                &endpoint,
                "-L",
                &m.mqtt_url(),
                "-t",
                "x",
                "-m",
                "y",
            ])
            .output()
            .unwrap();
        assert_eq!(both.status.code(), Some(1), "{both:?}");
    }

    /// The `aws_iot` example as a device: `--cert --key --ca` against the gateway.
    #[test]
    fn aws_iot_example_connects_with_a_device_certificate() {
        let Some((_m, gw, certs, dir)) = gateway() else {
            return;
        };
        let out = std::process::Command::new(crate::correctness::example("aws_iot"))
            .args(["--endpoint", &format!("mqtts://localhost:{}", gw.port)])
            .arg("--cert")
            .arg(dir.path().join("client.crt"))
            .arg("--key")
            .arg(dir.path().join("client.key"))
            .arg("--ca")
            .arg(dir.path().join("ca.crt"))
            .args([
                "--client-id",
                "example-device",
                "--topic",
                "devices/example",
            ])
            .output()
            .unwrap();
        let stdout = String::from_utf8_lossy(&out.stdout);
        assert!(out.status.success(), "{out:?}");
        assert!(stdout.contains("received on devices/example"), "{stdout}");
        assert!(gw.hellos().iter().all(|h| h.completed));
        drop(certs);
    }

    #[test]
    fn certificate_mode_is_validated_when_building() {
        let b = || AwsIotProvider::builder("abc-ats.iot.eu-west-1.amazonaws.com");
        let pem = b"-----BEGIN CERTIFICATE-----\n".to_vec();
        let both = b()
            .client_certificate(pem.clone(), b"key".to_vec())
            .credentials(StaticCredentials::new("AKID", "secret"))
            .build()
            .unwrap_err();
        assert!(
            both.to_string().contains("both a device certificate"),
            "{both}"
        );
        let no_key = b()
            .client_certificate(pem.clone(), Vec::new())
            .build()
            .unwrap_err();
        assert!(
            no_key.to_string().contains("without its private key"),
            "{no_key}"
        );
        let alpn = b().alpn(true).build().unwrap_err();
        assert!(alpn.to_string().contains("device certificate"), "{alpn}");
        let wss = AwsIotProvider::builder("wss://x.iot.eu-west-1.amazonaws.com/mqtt")
            .client_certificate(pem, b"key".to_vec())
            .build()
            .unwrap_err();
        assert!(wss.to_string().contains("mqtts://"), "{wss}");
        // AWS IoT's limits hold in certificate mode too.
        let dir = TempDir::new("aws-cert-limits");
        let certs = make_certs(dir.path());
        let (cert, key) = certs.client();
        let ka = b()
            .client_certificate(cert, key)
            .keep_alive(Duration::from_secs(5))
            .build()
            .unwrap_err();
        assert!(ka.to_string().contains("30 to 1200"), "{ka}");
    }
}

mod proxy {
    use super::*;

    const USER: &str = "proxyuser";
    const PASSWORD: &str = "Px-9sKw2Lq7";

    /// Through a proxy with Basic auth, every scheme: `ws://`, `mqtt://`, `wss://`, `mqtts://`.
    #[test]
    fn every_scheme_tunnels_through_a_proxy_with_basic_auth() {
        let Some(m) = Mosquitto::start() else { return };
        let proxy = ConnectProxy::start(Some((USER, PASSWORD)));
        let urls = [
            (m.ws_url(), m.ws_port),
            (m.mqtt_url(), m.tcp_port),
            (m.wss_url(), m.wss_port),
            (format!("mqtts://localhost:{}", m.mqtts_port), m.mqtts_port),
        ];
        for (i, (url, port)) in urls.iter().enumerate() {
            let ps = PubSub::new();
            ps.add_provider(
                MqttOverWsProvider::builder(url)
                    .proxy(proxy.url(Some((USER, PASSWORD))))
                    .ca_pem(m.ca_pem.clone())
                    .build()
                    .unwrap(),
            )
            .unwrap();
            assert_roundtrip(&ps, &format!("proxied/{i}"));
            ps.close().unwrap();
            let seen = proxy.seen();
            let last = seen.last().unwrap();
            assert!(
                last.target.ends_with(&format!(":{port}")),
                "{url}: {last:?}"
            );
            assert!(last.authorization.as_deref().unwrap().starts_with("Basic "));
        }
        assert_eq!(proxy.seen().len(), 4);
    }

    #[test]
    fn a_407_403_or_502_is_a_clear_error_naming_the_proxy_never_its_password() {
        let Some(m) = Mosquitto::start() else { return };
        let proxy = ConnectProxy::start(Some((USER, PASSWORD)));
        let try_with = |url: String| {
            PubSub::new()
                .add_provider(
                    MqttOverWsProvider::builder(m.mqtt_url())
                        .proxy(url)
                        .connect_timeout(Duration::from_secs(5))
                        .build()
                        .unwrap(),
                )
                .unwrap_err()
        };
        let wrong = try_with(proxy.url(Some((USER, "wrong-pw-123"))));
        let text = wrong.to_string();
        assert!(
            matches!(
                wrong,
                Error::Proxy {
                    status: Some(407),
                    ..
                }
            ),
            "{wrong:?}"
        );
        assert!(
            text.contains(&format!("http://{USER}@127.0.0.1:{}", proxy.port))
                && text.contains("refused the user name and password")
                && !text.contains("wrong-pw-123"),
            "{text}"
        );
        let none = try_with(proxy.url(None));
        assert!(
            none.to_string().contains("wants a user name and password"),
            "{none}"
        );
        for status in [403, 502] {
            proxy.refuse_with(status);
            let e = try_with(proxy.url(Some((USER, PASSWORD))));
            assert!(
                matches!(e, Error::Proxy { status: Some(s), .. } if s == status),
                "{e:?}"
            );
            assert!(!format!("{e} {e:?}").contains(PASSWORD), "{e:?}");
        }
        // Nothing listening where the proxy should be.
        let e = try_with(format!("http://127.0.0.1:{}", free_port()));
        assert!(
            matches!(&e, Error::Proxy { status: None, message, .. } if message.contains("could not reach")),
            "{e:?}"
        );
    }

    /// A refusal while reconnecting goes through the normal backoff, and the connection
    /// comes back once the proxy lets it through again.
    #[test]
    fn a_refusal_while_reconnecting_is_retried_with_backoff() {
        let Some(mut m) = Mosquitto::start() else {
            return;
        };
        let proxy = ConnectProxy::start(None);
        let ps = PubSub::new();
        let states = ps.state_changes();
        ps.add_provider(
            MqttOverWsProvider::builder(m.mqtt_url())
                .proxy(proxy.url(None))
                .reconnect(mqtt_pubsub::ReconnectPolicy::exponential(
                    Duration::from_millis(100),
                    Duration::from_millis(400),
                ))
                .build()
                .unwrap(),
        )
        .unwrap();
        wait_state(&states, ConnectionState::Connected);
        proxy.refuse_with(403);
        m.process.restart();
        // The loss, then two refused attempts, each reported with the proxy's answer (the
        // proxy refuses before it looks at the broker, so every attempt meets the 403).
        let lost = wait_state(&states, ConnectionState::ConnectionDisrupted);
        assert!(!lost.reason.unwrap_or_default().contains("403"));
        for _ in 0..2 {
            let e = wait_state(&states, ConnectionState::ConnectionDisrupted);
            let reason = e.reason.unwrap_or_default();
            assert!(
                reason.contains("403") && reason.contains(&format!("127.0.0.1:{}", proxy.port)),
                "{reason}"
            );
        }
        // The first CONNECT was the tunnel that worked; the refused ones came after it.
        let seen = proxy.seen().len();
        assert!(seen >= 3, "{seen} CONNECTs");
        proxy.refuse_with(0);
        wait_state(&states, ConnectionState::Connected);
        assert_roundtrip(&ps, "proxied/back");
    }

    /// What a process gets from its environment: `HTTP_PROXY` for `mqtt://`, `NO_PROXY`
    /// honoured, `HTTPS_PROXY` not used for a plain scheme, `.no_proxy()` overriding all.
    #[test]
    fn environment_variables_choose_the_proxy() {
        let Some(m) = Mosquitto::start() else { return };
        let proxy = ConnectProxy::start(None);
        type Case<'a> = (&'a str, &'a [(&'a str, String)], usize);
        let cases: [Case; 5] = [
            ("env", &[("HTTP_PROXY", proxy.url(None))], 1),
            ("env", &[("http_proxy", proxy.url(None))], 1),
            ("env", &[("ALL_PROXY", proxy.url(None))], 1),
            (
                "env",
                &[
                    ("HTTP_PROXY", proxy.url(None)),
                    ("NO_PROXY", "example.com, 127.0.0.1".into()),
                ],
                0,
            ),
            ("env", &[("HTTPS_PROXY", proxy.url(None))], 0),
        ];
        let mut expected = 0;
        for (i, (mode, vars, through)) in cases.iter().enumerate() {
            let mut env: Vec<(&str, String)> = vars.to_vec();
            env.push(("BROKER_URL", m.mqtt_url()));
            env.push(("MODE", mode.to_string()));
            run_child("transports::proxy::child_connects_from_environment", &env);
            expected += through;
            assert_eq!(proxy.seen().len(), expected, "case {i}: {vars:?}");
        }
        let env = vec![
            ("HTTP_PROXY", proxy.url(None)),
            ("BROKER_URL", m.mqtt_url()),
            ("MODE", "no_proxy".to_string()),
        ];
        run_child("transports::proxy::child_connects_from_environment", &env);
        assert_eq!(proxy.seen().len(), expected, ".no_proxy() wins");
    }

    #[test]
    #[ignore = "run by environment_variables_choose_the_proxy in a process of its own"]
    fn child_connects_from_environment() {
        let mut b = MqttOverWsProvider::builder(child_env("BROKER_URL"));
        if child_env("MODE") == "no_proxy" {
            b = b.no_proxy();
        }
        let ps = PubSub::new();
        ps.add_provider(b.build().unwrap()).unwrap();
        assert_roundtrip(&ps, "proxied/env");
        ps.close().unwrap();
    }

    /// The `pub` example's `--proxy` flag, with credentials.
    #[test]
    fn pub_example_tunnels_through_its_proxy_flag() {
        let Some(m) = Mosquitto::start() else { return };
        let proxy = ConnectProxy::start(Some((USER, PASSWORD)));
        let ps = PubSub::new();
        ps.add_provider(MqttOverWsProvider::builder(m.mqtt_url()).build().unwrap())
            .unwrap();
        let sub = ps.subscribe("cli/proxy").unwrap();
        let out = std::process::Command::new(crate::tools::ours("pub"))
            .args(["--url", &m.mqtt_url(), "--http-proxy"])
            .arg(proxy.url(Some((USER, PASSWORD))))
            .args(["-t", "cli/proxy", "-m", "tunnelled", "-q", "1"])
            .output()
            .unwrap();
        assert!(out.status.success(), "{out:?}");
        let m = sub.recv_timeout(WAIT).unwrap();
        assert_eq!(m.payload(), b"tunnelled");
        assert_eq!(proxy.seen().len(), 1);
    }

    #[cfg(feature = "aws-iot")]
    #[test]
    fn cognito_calls_go_through_the_proxy() {
        use mqtt_pubsub::aws::{CognitoCredentials, CredentialsProvider};
        let Some(moto) = crate::support::Moto::start() else {
            return;
        };
        let proxy = ConnectProxy::start(Some((USER, PASSWORD)));
        let pool = crate::aws::create_pool(&moto);
        let cognito = CognitoCredentials::unauthenticated(pool)
            .endpoint(moto.url())
            .proxy(proxy.url(Some((USER, PASSWORD))));
        let creds = cognito.credentials().unwrap();
        assert!(creds.session_token().is_some());
        let seen = proxy.seen();
        let port = url::Url::parse(&moto.url()).unwrap().port().unwrap();
        assert_eq!(
            seen.len(),
            2,
            "GetId and GetCredentialsForIdentity: {seen:?}"
        );
        assert!(seen.iter().all(|s| s.target.ends_with(&format!(":{port}"))));
    }
}

mod clusters {
    use super::*;

    /// A first URL where nothing listens is skipped on the first connect; the `Connected`
    /// event names the URL in use.
    #[test]
    fn a_dead_first_url_is_skipped_and_the_state_names_the_url_in_use() {
        let Some(m) = Mosquitto::start() else { return };
        let dead = format!("mqtt://127.0.0.1:{}", free_port());
        let ps = PubSub::new();
        let states = ps.state_changes();
        ps.add_provider(
            MqttOverWsProvider::builder(&dead)
                .fallback_urls([m.ws_url()])
                .build()
                .unwrap(),
        )
        .unwrap();
        let e = wait_state(&states, ConnectionState::Connected);
        assert_eq!(e.url.as_deref(), Some(m.ws_url().as_str()));
        assert_roundtrip(&ps, "cluster/first-dead");
    }

    /// A real three-node NATS cluster (clustered JetStream, MQTT on each node): the node
    /// the subscriber is on is killed during a QoS 1 stream; the subscriber's persistent
    /// session moves to another node and every number arrives (duplicates allowed).
    #[test]
    fn a_nats_cluster_node_killed_under_a_qos1_stream_loses_nothing() {
        use mqtt_pubsub::{PublishOptions, QoS, SubscribeOptions};
        let Some(mut cluster) = crate::support::NatsCluster::start() else {
            return;
        };
        let urls = cluster.mqtt_urls();
        const N: usize = 600;
        let fast = mqtt_pubsub::ReconnectPolicy::exponential(
            Duration::from_millis(50),
            Duration::from_millis(500),
        );
        let sub_ps = PubSub::new();
        let states = sub_ps.state_changes();
        sub_ps
            .add_provider(
                MqttOverWsProvider::builder(&urls[0])
                    .fallback_urls(urls[1..].to_vec())
                    .client_id("cluster-subscriber")
                    .clean_session(false)
                    .reconnect(fast)
                    .build()
                    .unwrap(),
            )
            .unwrap();
        assert_eq!(
            wait_state(&states, ConnectionState::Connected)
                .url
                .as_deref(),
            Some(urls[0].as_str())
        );
        let sub = sub_ps
            .subscribe_with(
                "cluster/stream",
                SubscribeOptions::default()
                    .qos(QoS::AtLeastOnce)
                    .capacity(N * 4),
            )
            .unwrap();
        // The publisher is on another node, so only the subscriber's node dies.
        let pub_ps = PubSub::new();
        pub_ps
            .add_provider(
                MqttOverWsProvider::builder(&urls[2])
                    .fallback_urls([urls[1].clone()])
                    .client_id("cluster-publisher")
                    .reconnect(fast)
                    .build()
                    .unwrap(),
            )
            .unwrap();
        let publisher = std::thread::spawn(move || {
            for i in 0..N {
                pub_ps
                    .publish_with(
                        "cluster/stream",
                        i.to_string(),
                        PublishOptions::default()
                            .qos(QoS::AtLeastOnce)
                            .timeout(Duration::from_secs(60)),
                    )
                    .unwrap_or_else(|e| panic!("publish {i}: {e}"));
            }
            pub_ps.close().unwrap();
        });
        let mut got = vec![0u32; N];
        let mut killed = false;
        let mut distinct = 0;
        while distinct < N {
            let m = sub
                .recv_timeout(Duration::from_secs(60))
                .unwrap_or_else(|e| {
                    let seen: Vec<StateEvent> = states.try_iter().collect();
                    panic!("{distinct} of {N} arrived, then: {e:?}; states: {seen:#?}")
                });
            let i: usize = m.text().unwrap().parse().unwrap();
            if got[i] == 0 {
                distinct += 1;
            }
            got[i] += 1;
            if !killed && distinct == N / 4 {
                cluster.nodes[0].kill();
                killed = true;
            }
        }
        publisher.join().unwrap();
        let moved = wait_state(&states, ConnectionState::Connected);
        assert_ne!(moved.url.as_deref(), Some(urls[0].as_str()), "{moved:?}");
        let duplicates: u32 = got.iter().map(|c| c - 1).sum();
        eprintln!(
            "{N} messages, node 0 killed after {}, {duplicates} duplicates",
            N / 4
        );
    }
}

#[cfg(feature = "aws-iot")]
mod aws_custom_auth_over_mqtt {
    use super::*;
    use crate::support::tls_gateway::TlsGateway;
    use crate::support::{make_certs, TempDir};
    use mqtt_pubsub::{AwsIotProvider, CustomAuthorizer};

    /// A custom authorizer over MQTT (AWS's alternative to `wss://` headers): MQTT over TLS
    /// offering the ALPN protocol `mqtt` (what port 443 needs; `alpn(true)` stands in for
    /// it on the gateway's port), no client certificate, the authorizer's name, signature and
    /// token percent-encoded in the username's query string, the password as given. The
    /// gateway records what it received and relays to mosquitto; a round trip completes.
    #[test]
    fn the_authorizer_rides_in_the_mqtt_username_and_a_round_trip_completes() {
        let Some(m) = Mosquitto::start() else { return };
        let dir = TempDir::new("aws-custom-mqtt");
        let certs = make_certs(dir.path());
        let gw = TlsGateway::start_custom_auth(&certs, m.tcp_port);
        let token = "tok+en/with=chars&more-custom-auth-token";
        let ps = PubSub::new();
        ps.add_provider(
            AwsIotProvider::builder(format!("mqtts://localhost:{}", gw.port))
                .custom_authorizer(
                    CustomAuthorizer::new("my-authorizer")
                        .token("x-token", token)
                        .signature("c2lnbmF0dXJlLWJ5dGVzLWJhc2U2NA==")
                        .over_mqtt(true),
                )
                .alpn(true)
                .username_password("device-17", "passed-through-password")
                .ca_pem(certs.ca_pem.clone())
                .build()
                .unwrap(),
        )
        .unwrap();
        assert_roundtrip(&ps, "devices/custom/telemetry");
        ps.close().unwrap();
        let hello = &gw.hellos()[0];
        assert_eq!(hello.alpn, vec!["mqtt".to_string()]);
        let (username, password) = hello.credentials.clone().expect("a CONNECT");
        assert_eq!(
            username.as_deref(),
            Some(
                "device-17?x-amz-customauthorizer-name=my-authorizer\
                 &x-amz-customauthorizer-signature=c2lnbmF0dXJlLWJ5dGVzLWJhc2U2NA%3D%3D\
                 &x-token=tok%2Ben%2Fwith%3Dchars%26more-custom-auth-token"
            )
        );
        assert_eq!(password.as_deref(), Some(&b"passed-through-password"[..]));
    }

    /// Combinations AWS would refuse are build errors.
    #[test]
    fn combinations_aws_refuses_are_build_errors() {
        let over_mqtt = || CustomAuthorizer::new("a").token("k", "v").over_mqtt(true);
        for (what, b) in [
            (
                "in_query",
                AwsIotProvider::builder("abc-ats.iot.eu-west-1.amazonaws.com")
                    .custom_authorizer(over_mqtt().in_query(true)),
            ),
            (
                "headers",
                AwsIotProvider::builder("abc-ats.iot.eu-west-1.amazonaws.com")
                    .custom_authorizer(over_mqtt())
                    .header("x-a", "b"),
            ),
            (
                "needs mqtts://",
                AwsIotProvider::builder("wss://abc-ats.iot.eu-west-1.amazonaws.com/mqtt")
                    .custom_authorizer(over_mqtt()),
            ),
            (
                "'?'",
                AwsIotProvider::builder("abc-ats.iot.eu-west-1.amazonaws.com")
                    .custom_authorizer(over_mqtt())
                    .username_password("a?b", "p"),
            ),
        ] {
            let err = b.build().unwrap_err();
            assert!(err.to_string().contains(what), "{what}: {err}");
        }
        // No region is needed over MQTT, and 443 is the default port.
        AwsIotProvider::builder("localhost")
            .custom_authorizer(over_mqtt())
            .build()
            .unwrap();
    }
}
