//! A TCP link the test controls between a guest and the host's callback
//! API: it forwards bytes both ways until the test cuts it. While cut, the
//! connections it had are reset, and new ones are either held open in
//! silence (a black hole: packets lost) or closed at once (refused), as a
//! network outage looks from either side.

use std::net::SocketAddr;
use std::sync::{Arc, Mutex};

use tokio::net::{TcpListener, TcpStream};
use tokio::task::JoinHandle;

/// How the link treats connections while it is cut.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Cut {
    /// Forwarding.
    Up,
    /// Accepted and held without a byte either way until the link is up.
    BlackHole,
    /// Accepted and closed at once.
    Refuse,
}

#[derive(Default)]
struct State {
    cut: Option<Cut>,
    /// Tasks forwarding or holding connections (aborted on a cut).
    live: Vec<JoinHandle<()>>,
    /// Connections accepted, for the report.
    accepted: u64,
}

/// The link; stopped on drop.
pub struct Link {
    addr: SocketAddr,
    state: Arc<Mutex<State>>,
    accept: JoinHandle<()>,
}

impl Link {
    /// Listens on a loopback port and forwards to `upstream`.
    pub async fn start(upstream: SocketAddr) -> Link {
        let listener = TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind the link");
        let addr = listener.local_addr().expect("the link's address");
        let state = Arc::new(Mutex::new(State::default()));
        let shared = state.clone();
        let accept = tokio::spawn(async move {
            while let Ok((conn, _)) = listener.accept().await {
                let mut st = shared.lock().unwrap();
                st.accepted += 1;
                st.live.retain(|t| !t.is_finished());
                match st.cut.unwrap_or(Cut::Up) {
                    Cut::Up => st.live.push(tokio::spawn(forward(conn, upstream))),
                    // Held until the link comes up again, which aborts it.
                    Cut::BlackHole => st.live.push(tokio::spawn(async move {
                        let _held = conn;
                        std::future::pending::<()>().await;
                    })),
                    Cut::Refuse => drop(conn),
                }
            }
        });
        Link {
            addr,
            state,
            accept,
        }
    }

    /// The URL a guest is given.
    pub fn url(&self) -> String {
        format!("http://{}", self.addr)
    }

    /// Cuts the link (every connection it carries is dropped) or brings it
    /// back up (the held ones are dropped too).
    pub fn set(&self, cut: Cut) {
        let mut st = self.state.lock().unwrap();
        st.cut = Some(cut);
        for t in st.live.drain(..) {
            t.abort();
        }
    }

    /// Connections accepted so far.
    pub fn accepted(&self) -> u64 {
        self.state.lock().unwrap().accepted
    }
}

impl Drop for Link {
    fn drop(&mut self) {
        self.accept.abort();
        self.set(Cut::Refuse);
    }
}

async fn forward(mut conn: TcpStream, upstream: SocketAddr) {
    let Ok(mut up) = TcpStream::connect(upstream).await else {
        return;
    };
    let _ = tokio::io::copy_bidirectional(&mut conn, &mut up).await;
}
