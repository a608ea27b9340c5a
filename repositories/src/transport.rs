//! Our own git transports for `http`, `https` and `git` URLs, so that the SSRF guard holds when libgit2
//! connects and not only when a URL is stored.
//!
//! A clone URL is checked once when a repo_unit is created ([`crate::remote`]), but its host is resolved
//! again at every fetch: a name that pointed at a public address then can point at `127.0.0.1` now (DNS
//! rebinding). libgit2's built-in transports resolve names themselves, out of our reach, so they are
//! replaced (`git2::transport::register`) by smart transports that:
//!
//! - resolve every host through [`GuardedResolver`], which refuses loopback, private, link-local and the
//!   other internal addresses ([`crate::remote::is_internal`]) unless `allow_local_remotes` is on, and
//!   check IP-literal hosts the same way (reqwest does not resolve those);
//! - speak smart HTTP through reqwest (rustls on ring: no system OpenSSL), with no proxy, no redirects,
//!   connect and idle-read timeouts, and a byte limit on everything read;
//! - send a private repository's credentials as HTTP basic auth;
//! - never push.
//!
//! What a fetch may do (policy, credentials, limit) is handed to the transport through a thread-local
//! [`FetchContext`] set by [`with_context`]: libgit2 creates the transport on the thread that fetches.

use std::cell::RefCell;
use std::io::{self, Read, Write};
use std::net::{IpAddr, SocketAddr, TcpStream, ToSocketAddrs};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, Once};
use std::time::Duration;

use git2::transport::{Service, SmartSubtransport, SmartSubtransportStream, Transport};
use url::{Host, Url};

use crate::remote::is_internal;
use crate::{Credentials, RepoError};

/// How long connecting to a remote may take.
pub const CONNECT_TIMEOUT: Duration = Duration::from_secs(15);
/// How long a remote may stay silent in the middle of a response.
pub const READ_TIMEOUT: Duration = Duration::from_secs(60);
/// Bytes a remote may send beyond the repository size limit: the ref advertisement and protocol framing
/// come on top of the pack that the size limit is about.
const FRAMING_ALLOWANCE: u64 = 4 * 1024 * 1024;

/// What one fetch is allowed to do, and what went wrong in the transport if it failed.
pub(crate) struct FetchContext {
    allow_local_remotes: bool,
    credentials: Option<Credentials>,
    byte_limit: Option<u64>,
    read: AtomicU64,
    failure: Mutex<Option<RepoError>>,
}

impl FetchContext {
    pub(crate) fn new(
        allow_local_remotes: bool,
        credentials: Option<&Credentials>,
        size_limit: Option<u64>,
    ) -> Arc<Self> {
        Arc::new(Self {
            allow_local_remotes,
            credentials: credentials.cloned(),
            byte_limit: size_limit.map(|l| l.saturating_add(FRAMING_ALLOWANCE)),
            read: AtomicU64::new(0),
            failure: Mutex::new(None),
        })
    }

    /// Without a context (a fetch not started through [`with_context`]) nothing internal is reachable.
    fn strict() -> Arc<Self> {
        Self::new(false, None, None)
    }

    /// Keeps the first failure: it is the cause, later ones are consequences.
    fn fail(&self, error: RepoError) -> git2::Error {
        let message = error.to_string();
        let mut failure = self.failure.lock().unwrap_or_else(|e| e.into_inner());
        failure.get_or_insert(error);
        git2::Error::from_str(&message)
    }

    /// The failure the transport saw, if any (then it explains the fetch error better than libgit2).
    pub(crate) fn take_failure(&self) -> Option<RepoError> {
        self.failure
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .take()
    }

    fn count(&self, n: usize) -> io::Result<()> {
        let total = self.read.fetch_add(n as u64, Ordering::Relaxed) + n as u64;
        match self.byte_limit {
            Some(limit) if total > limit => {
                let limit = limit - FRAMING_ALLOWANCE;
                let error = self.fail(RepoError::TooLarge { limit });
                Err(io::Error::other(error.message().to_owned()))
            }
            _ => Ok(()),
        }
    }
}

thread_local! {
    static CONTEXT: RefCell<Option<Arc<FetchContext>>> = const { RefCell::new(None) };
}

/// Runs `f` (a fetch) with `context` governing every transport it opens on this thread.
pub(crate) fn with_context<T>(context: &Arc<FetchContext>, f: impl FnOnce() -> T) -> T {
    struct Reset(Option<Arc<FetchContext>>);
    impl Drop for Reset {
        fn drop(&mut self) {
            let previous = self.0.take();
            CONTEXT.with(|c| *c.borrow_mut() = previous);
        }
    }
    register();
    let previous = CONTEXT.with(|c| c.borrow_mut().replace(context.clone()));
    let _reset = Reset(previous);
    f()
}

fn current_context() -> Arc<FetchContext> {
    CONTEXT
        .with(|c| c.borrow().clone())
        .unwrap_or_else(FetchContext::strict)
}

static REGISTER: Once = Once::new();

/// Replaces libgit2's `http`, `https` and `git` transports with ours, once per process.
#[allow(unsafe_code)]
fn register() {
    REGISTER.call_once(|| {
        for scheme in ["http", "https"] {
            // SAFETY: `register` must not race with libgit2 creating transports. Every fetch in this
            // crate goes through `with_context`, which waits for this `Once` before opening a remote,
            // and nothing else in the process opens remotes.
            let registered = unsafe {
                git2::transport::register(scheme, |remote| {
                    Transport::smart(remote, true, HttpSubtransport::new(current_context()))
                })
            };
            if let Err(error) = registered {
                tracing::error!(scheme, %error, "cannot register the guarded git transport");
            }
        }
        // SAFETY: as above.
        let registered = unsafe {
            git2::transport::register("git", |remote| {
                Transport::smart(remote, false, GitSubtransport(current_context()))
            })
        };
        if let Err(error) = registered {
            tracing::error!(%error, "cannot register the guarded git:// transport");
        }
    });
}

fn refused(host: &str) -> RepoError {
    RepoError::UrlRefused(format!(
        "{host} resolves to a loopback or private address; an admin can allow such remotes with \
         allow_local_remotes (PEPEUNIT_ALLOW_LOCAL_REMOTES)"
    ))
}

/// Checks resolved addresses against the policy: one internal address refuses the whole name.
fn check_addresses(
    host: &str,
    addresses: &[SocketAddr],
    allow_local: bool,
) -> Result<(), RepoError> {
    if addresses.is_empty() {
        return Err(RepoError::UrlRefused(format!("{host} has no address")));
    }
    if !allow_local && addresses.iter().any(|a| is_internal(a.ip())) {
        return Err(refused(host));
    }
    Ok(())
}

/// Resolves a host for reqwest, refusing internal addresses at connect time.
struct GuardedResolver {
    context: Arc<FetchContext>,
}

impl reqwest::dns::Resolve for GuardedResolver {
    fn resolve(&self, name: reqwest::dns::Name) -> reqwest::dns::Resolving {
        let context = self.context.clone();
        Box::pin(async move {
            let host = name.as_str().to_owned();
            let addresses: Vec<SocketAddr> =
                tokio::net::lookup_host((host.as_str(), 0)).await?.collect();
            check_addresses(&host, &addresses, context.allow_local_remotes).map_err(|e| {
                Box::new(context.fail(e)) as Box<dyn std::error::Error + Send + Sync>
            })?;
            Ok(Box::new(addresses.into_iter()) as reqwest::dns::Addrs)
        })
    }
}

/// Checks an IP-literal host, which no resolver sees.
fn check_literal(context: &FetchContext, url: &Url) -> Result<(), git2::Error> {
    let ip = match url.host() {
        Some(Host::Ipv4(ip)) => IpAddr::V4(ip),
        Some(Host::Ipv6(ip)) => IpAddr::V6(ip),
        Some(Host::Domain(_)) => return Ok(()),
        None => return Err(context.fail(RepoError::UrlRefused("the URL has no host".into()))),
    };
    if !context.allow_local_remotes && is_internal(ip) {
        return Err(context.fail(refused(&ip.to_string())));
    }
    Ok(())
}

fn parse(context: &FetchContext, url: &str) -> Result<Url, git2::Error> {
    Url::parse(url).map_err(|e| context.fail(RepoError::UrlRefused(format!("not a URL: {e}"))))
}

/// Smart HTTP over reqwest (stateless: one request per step of the negotiation).
struct HttpSubtransport {
    context: Arc<FetchContext>,
    client: Mutex<Option<reqwest::blocking::Client>>,
}

impl HttpSubtransport {
    fn new(context: Arc<FetchContext>) -> Self {
        Self {
            context,
            client: Mutex::new(None),
        }
    }

    fn client(&self) -> Result<reqwest::blocking::Client, git2::Error> {
        let mut client = self.client.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(client) = &*client {
            return Ok(client.clone());
        }
        let built = reqwest::blocking::Client::builder()
            .user_agent(concat!(
                "git/2.0 (pepeunit/",
                env!("CARGO_PKG_VERSION"),
                ")"
            ))
            .dns_resolver(Arc::new(GuardedResolver {
                context: self.context.clone(),
            }))
            // A proxy would resolve the host for us, past the guard; a redirect could lead anywhere.
            .no_proxy()
            .redirect(reqwest::redirect::Policy::none())
            .connect_timeout(CONNECT_TIMEOUT)
            // In the blocking client this bounds each step (the response headers, every read), not the
            // whole download: a large pack may take long, the byte limit bounds its total instead.
            .timeout(READ_TIMEOUT)
            .build()
            .map_err(|e| {
                self.context
                    .fail(RepoError::Git(format!("http client: {e}")))
            })?;
        *client = Some(built.clone());
        Ok(built)
    }
}

impl SmartSubtransport for HttpSubtransport {
    fn action(
        &self,
        url: &str,
        action: Service,
    ) -> Result<Box<dyn SmartSubtransportStream>, git2::Error> {
        let base = parse(&self.context, url)?;
        check_literal(&self.context, &base)?;
        let base = url.trim_end_matches('/');
        let (method, url, content_type) = match action {
            Service::UploadPackLs => (
                reqwest::Method::GET,
                format!("{base}/info/refs?service=git-upload-pack"),
                "application/x-git-upload-pack-advertisement",
            ),
            Service::UploadPack => (
                reqwest::Method::POST,
                format!("{base}/git-upload-pack"),
                "application/x-git-upload-pack-result",
            ),
            Service::ReceivePackLs | Service::ReceivePack => {
                return Err(git2::Error::from_str("pushing is not supported"));
            }
        };
        Ok(Box::new(HttpStream {
            context: self.context.clone(),
            client: self.client()?,
            method,
            url,
            content_type,
            body: Vec::new(),
            response: None,
        }))
    }

    fn close(&self) -> Result<(), git2::Error> {
        Ok(())
    }
}

/// One request: what libgit2 writes is the body, sent on the first read.
struct HttpStream {
    context: Arc<FetchContext>,
    client: reqwest::blocking::Client,
    method: reqwest::Method,
    url: String,
    content_type: &'static str,
    body: Vec<u8>,
    response: Option<reqwest::blocking::Response>,
}

impl HttpStream {
    fn send(&mut self) -> Result<reqwest::blocking::Response, RepoError> {
        let mut request = self.client.request(self.method.clone(), &self.url);
        if self.method == reqwest::Method::POST {
            request = request
                .header("Content-Type", "application/x-git-upload-pack-request")
                .header("Accept", self.content_type)
                .body(std::mem::take(&mut self.body));
        }
        if let Some(c) = &self.context.credentials {
            request = request.basic_auth(&c.username, Some(&c.password));
        }
        let response = request.send().map_err(|e| {
            let mut source: Option<&dyn std::error::Error> = Some(&e);
            let mut text = e.to_string();
            while let Some(cause) = source {
                text = cause.to_string();
                source = cause.source();
            }
            RepoError::Git(format!("cannot reach the remote: {text}"))
        })?;
        let status = response.status();
        if status == reqwest::StatusCode::UNAUTHORIZED || status == reqwest::StatusCode::FORBIDDEN {
            return Err(RepoError::AuthFailed);
        }
        if status.is_redirection() {
            return Err(RepoError::Git(format!(
                "the remote answered {status} (a redirect); use the URL it redirects to"
            )));
        }
        if !status.is_success() {
            return Err(RepoError::Git(format!("the remote answered {status}")));
        }
        let served = response
            .headers()
            .get(reqwest::header::CONTENT_TYPE)
            .and_then(|v| v.to_str().ok())
            .unwrap_or_default();
        if served != self.content_type {
            return Err(RepoError::Git(format!(
                "not a smart git HTTP server (content type {served:?})"
            )));
        }
        Ok(response)
    }
}

impl Read for HttpStream {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        if self.response.is_none() {
            let response = self.send().map_err(|e| {
                let error = self.context.fail(e);
                io::Error::other(error.message().to_owned())
            })?;
            self.response = Some(response);
        }
        let Some(response) = self.response.as_mut() else {
            return Ok(0);
        };
        let n = response.read(buf)?;
        self.context.count(n)?;
        Ok(n)
    }
}

impl Write for HttpStream {
    fn write(&mut self, data: &[u8]) -> io::Result<usize> {
        if self.response.is_some() {
            return Err(io::Error::other("write after the response started"));
        }
        self.body.extend_from_slice(data);
        Ok(data.len())
    }

    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

/// The git protocol over TCP (stateful: one connection for the whole fetch).
struct GitSubtransport(Arc<FetchContext>);

impl GitSubtransport {
    fn connect(&self, url: &Url) -> Result<TcpStream, RepoError> {
        let host = url
            .host_str()
            .ok_or_else(|| RepoError::UrlRefused("the URL has no host".into()))?
            .trim_start_matches('[')
            .trim_end_matches(']');
        let port = url.port().unwrap_or(9418);
        let addresses: Vec<SocketAddr> = (host, port)
            .to_socket_addrs()
            .map_err(|e| RepoError::Git(format!("cannot resolve {host}: {e}")))?
            .collect();
        check_addresses(host, &addresses, self.0.allow_local_remotes)?;
        let mut last = None;
        for address in &addresses {
            match TcpStream::connect_timeout(address, CONNECT_TIMEOUT) {
                Ok(stream) => {
                    stream.set_read_timeout(Some(READ_TIMEOUT))?;
                    stream.set_write_timeout(Some(READ_TIMEOUT))?;
                    return Ok(stream);
                }
                Err(error) => last = Some(error),
            }
        }
        Err(RepoError::Git(format!(
            "cannot reach the remote: {}",
            last.map(|e| e.to_string()).unwrap_or_default()
        )))
    }
}

impl SmartSubtransport for GitSubtransport {
    fn action(
        &self,
        url: &str,
        action: Service,
    ) -> Result<Box<dyn SmartSubtransportStream>, git2::Error> {
        if action != Service::UploadPackLs && action != Service::UploadPack {
            return Err(git2::Error::from_str("pushing is not supported"));
        }
        let parsed = parse(&self.0, url)?;
        let mut stream = self.connect(&parsed).map_err(|e| self.0.fail(e))?;
        let host = match parsed.port() {
            Some(port) => format!("{}:{port}", parsed.host_str().unwrap_or_default()),
            None => parsed.host_str().unwrap_or_default().to_owned(),
        };
        let request = format!("git-upload-pack {}\0host={host}\0", parsed.path());
        let line = format!("{:04x}{request}", request.len() + 4);
        stream
            .write_all(line.as_bytes())
            .map_err(|e| self.0.fail(RepoError::Io(e)))?;
        Ok(Box::new(GitStream {
            context: self.0.clone(),
            stream,
        }))
    }

    fn close(&self) -> Result<(), git2::Error> {
        Ok(())
    }
}

struct GitStream {
    context: Arc<FetchContext>,
    stream: TcpStream,
}

impl Read for GitStream {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let n = self.stream.read(buf)?;
        self.context.count(n)?;
        Ok(n)
    }
}

impl Write for GitStream {
    fn write(&mut self, data: &[u8]) -> io::Result<usize> {
        self.stream.write(data)
    }

    fn flush(&mut self) -> io::Result<()> {
        self.stream.flush()
    }
}
