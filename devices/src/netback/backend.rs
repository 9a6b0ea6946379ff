//! The vif's xenbus state machine and its two data threads.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::Duration;

use super::proto::{MAX_PACKET, RX_ENTRY, TX_ENTRY, VNET_HDR_LEN};
use super::rx::{Deliver, RxFeatures, RxPath};
use super::tap::{Link, TUN_F_CSUM, TUN_F_TSO4, TUN_F_TSO6};
use super::tx::TxPath;
use crate::notify::Kick;
use crate::ring::{BackRing, GrantedPages};
use crate::xenbus::{BackendCtx, State, XenbusDev};

const IDLE: Duration = Duration::from_millis(100);

/// Serve the device until `stop`.
pub(super) fn run(ctx: BackendCtx, dev: XenbusDev, link: Arc<dyn Link>, stop: Arc<AtomicBool>) {
    let name = dev.paths.backend.clone();
    let mut conn: Option<Connection> = None;
    while !stop.load(Ordering::Relaxed) {
        let fe = dev.frontend_state();
        let be = dev.backend_state();
        let r = match fe {
            State::Initialised | State::Connected if conn.is_none() && be == State::InitWait => {
                match connect(&ctx, &dev, &link) {
                    Ok(c) => {
                        log::info!("{name}: connected");
                        conn = Some(c);
                        dev.switch_state(State::Connected)
                    }
                    Err(e) => {
                        log::warn!("{name}: cannot connect: {e}");
                        dev.switch_state(State::Closing)
                    }
                }
            }
            State::Closing => {
                conn = None;
                if be != State::Closing && be != State::Closed {
                    dev.switch_state(State::Closing)
                } else {
                    Ok(())
                }
            }
            State::Closed | State::Unknown => {
                conn = None;
                if be != State::Closed {
                    dev.switch_state(State::Closed)
                } else {
                    Ok(())
                }
            }
            // A frontend starting over (after Closed, or a reboot).
            State::Initialising if be != State::InitWait => {
                conn = None;
                dev.switch_state(State::InitWait)
            }
            _ => Ok(()),
        };
        if let Err(e) = r {
            log::warn!("{name}: {e}");
        }
        dev.wait_change(Duration::from_millis(200));
    }
    drop(conn);
    let _ = dev.switch_state(State::Closed);
}

#[derive(Debug, thiserror::Error)]
enum ConnectError {
    #[error("frontend key {0} is missing or invalid")]
    Key(String),
    #[error("the frontend does not request rx-copy")]
    NoRxCopy,
    #[error("{0} queues requested; only 1 is offered")]
    Queues(u64),
    #[error("mapping a ring: {0}")]
    Map(#[from] xen_shim::grantmap::GrantError),
    #[error("event channel {0} cannot be bound")]
    Port(u32),
    #[error("starting a thread: {0}")]
    Thread(std::io::Error),
}

/// The data threads of a connected vif; dropping it disconnects.
struct Connection {
    ctx: BackendCtx,
    stop: Arc<AtomicBool>,
    kicks: Vec<Arc<Kick>>,
    threads: Vec<JoinHandle<String>>,
    ports: Vec<(u32, u32)>,
    link: Arc<dyn Link>,
}

impl Drop for Connection {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        for k in &self.kicks {
            k.kick();
        }
        for t in self.threads.drain(..) {
            if let Ok(s) = t.join() {
                log::info!("{s}");
            }
        }
        for &(port, id) in &self.ports {
            self.ctx.unbind_port(port, id);
        }
        let _ = self.link.set_offload(0);
    }
}

fn key_u32(dev: &XenbusDev, key: &str) -> Result<u32, ConnectError> {
    dev.read_fe_u64(key)
        .and_then(|v| u32::try_from(v).ok())
        .ok_or_else(|| ConnectError::Key(key.to_string()))
}

fn connect(
    ctx: &BackendCtx,
    dev: &XenbusDev,
    link: &Arc<dyn Link>,
) -> Result<Connection, ConnectError> {
    if dev.read_fe_u64("request-rx-copy").unwrap_or(0) != 1 {
        return Err(ConnectError::NoRxCopy);
    }
    let queues = dev.read_fe_u64("multi-queue-num-queues").unwrap_or(1);
    if queues != 1 {
        return Err(ConnectError::Queues(queues));
    }
    let q = if dev.read_fe("tx-ring-ref").is_none() && dev.read_fe("queue-0/tx-ring-ref").is_some()
    {
        "queue-0/"
    } else {
        ""
    };
    let tx_ref = key_u32(dev, &format!("{q}tx-ring-ref"))?;
    let rx_ref = key_u32(dev, &format!("{q}rx-ring-ref"))?;
    let (tx_port, rx_port) = match key_u32(dev, &format!("{q}event-channel")) {
        Ok(p) => (p, p),
        Err(_) => (
            key_u32(dev, &format!("{q}event-channel-tx"))?,
            key_u32(dev, &format!("{q}event-channel-rx"))?,
        ),
    };
    let split = tx_port != rx_port;
    let flag = |k: &str| dev.read_fe_u64(k).unwrap_or(0) == 1;
    let sg = flag("feature-sg");
    let features = RxFeatures {
        csum: !flag("feature-no-csum-offload"),
        ipv6_csum: flag("feature-ipv6-csum-offload"),
        gso_tcpv4: sg && flag("feature-gso-tcpv4"),
        gso_tcpv6: sg && flag("feature-gso-tcpv6"),
    };
    let tx_ring = BackRing::new(GrantedPages::map(&ctx.dom, &[tx_ref])?, TX_ENTRY);
    let rx_ring = BackRing::new(GrantedPages::map(&ctx.dom, &[rx_ref])?, RX_ENTRY);
    let mut offload = 0;
    if features.csum {
        offload |= TUN_F_CSUM;
        if features.gso_tcpv4 {
            offload |= TUN_F_TSO4;
        }
        if features.gso_tcpv6 {
            offload |= TUN_F_TSO6;
        }
    }
    if let Err(e) = link.set_offload(offload) {
        log::warn!("{}: tap offloads {offload:#x}: {e}", dev.paths.backend);
    }
    log::debug!(
        "{}: rings {tx_ref}/{rx_ref}, ports {tx_port}/{rx_port}, {features:?}",
        dev.paths.backend
    );

    let tx_kick = Arc::new(Kick::default());
    let rx_kick = Arc::new(Kick::default());
    let mut conn = Connection {
        ctx: ctx.clone(),
        stop: Arc::new(AtomicBool::new(false)),
        kicks: vec![tx_kick.clone(), rx_kick.clone()],
        threads: Vec::new(),
        ports: Vec::new(),
        link: link.clone(),
    };
    let id = ctx
        .bind_port(tx_port, tx_kick.clone())
        .ok_or(ConnectError::Port(tx_port))?;
    conn.ports.push((tx_port, id));
    if split {
        let id = ctx
            .bind_port(rx_port, rx_kick.clone())
            .ok_or(ConnectError::Port(rx_port))?;
        conn.ports.push((rx_port, id));
    }

    let name = dev.paths.backend.rsplit('/').take(2).collect::<Vec<_>>();
    let name = format!("vif{}.{}", name.get(1).unwrap_or(&"?"), name[0]);
    let mut tx = TxPath::new(tx_ring, ctx.dom.clone());
    let (c, l, s, fwd) = (
        ctx.clone(),
        link.clone(),
        conn.stop.clone(),
        rx_kick.clone(),
    );
    let tname = name.clone();
    let t = std::thread::Builder::new()
        .name(format!("{name}-tx"))
        .spawn(move || {
            let mut send = |f: &[u8]| {
                if let Err(e) = l.send(f) {
                    log::debug!("tap write: {e}");
                }
            };
            while !s.load(Ordering::Relaxed) {
                if tx.poll(&mut send) {
                    c.notify(tx_port);
                }
                if tx.more() {
                    continue;
                }
                if tx_kick.wait(IDLE) && !split {
                    fwd.kick();
                }
            }
            format!("{tname}: guest sent {:?}", tx.stats)
        })
        .map_err(ConnectError::Thread)?;
    conn.threads.push(t);

    let rx = RxPath::new(rx_ring, ctx.dom.clone(), features);
    let (c, l, s) = (ctx.clone(), link.clone(), conn.stop.clone());
    let t = std::thread::Builder::new()
        .name(format!("{name}-rx"))
        .spawn(move || {
            let st = rx_loop(rx, &c, &*l, &s, &rx_kick, rx_port);
            format!("{name}: guest received {st:?}")
        })
        .map_err(ConnectError::Thread)?;
    conn.threads.push(t);
    Ok(conn)
}

/// Tap -> guest until `stop`: read frames, place as many as the posted
/// buffers allow, publish, notify; when out of buffers, wait for the
/// frontend to post more.
fn rx_loop(
    mut rx: RxPath,
    ctx: &BackendCtx,
    link: &dyn Link,
    stop: &AtomicBool,
    kick: &Kick,
    port: u32,
) -> super::rx::RxStats {
    let mut buf = vec![0u8; VNET_HDR_LEN + MAX_PACKET + 64];
    let mut pending: Option<usize> = None;
    while !stop.load(Ordering::Relaxed) {
        if pending.is_none() {
            match link.recv(&mut buf, IDLE) {
                Ok(Some(n)) => pending = Some(n),
                Ok(None) => continue,
                Err(e) => {
                    log::warn!("tap read: {e}");
                    std::thread::sleep(IDLE);
                    continue;
                }
            }
        }
        let mut placed = 0u32;
        while let Some(n) = pending {
            if rx.deliver(&buf[..n]) == Deliver::NoRoom {
                break;
            }
            pending = None;
            placed += 1;
            if placed.is_multiple_of(32) && rx.push() {
                ctx.notify(port);
            }
            if let Ok(Some(n)) = link.recv(&mut buf, Duration::ZERO) {
                pending = Some(n);
            }
        }
        if rx.push() {
            ctx.notify(port);
        }
        if pending.is_some() && !rx.more() {
            kick.wait(IDLE);
        }
        if rx.ring().broken().is_some() {
            // Nothing more can be delivered; drain the tap slowly.
            pending = None;
            kick.wait(IDLE);
        }
    }
    rx.stats
}
