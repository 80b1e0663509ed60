//! A loopback stand-in for the Hugging Face hub: the listing API, `resolve/` with the hub's
//! headers (including the LFS redirect to a CDN URL), auth, 404s and a connection cut mid-body,
//! for model repos (`/api/models/…`, `/{id}/resolve/…`) and dataset repos (`/api/datasets/…`,
//! `/datasets/{id}/resolve/…`).

use std::collections::hash_map::DefaultHasher;
use std::hash::{Hash, Hasher};
use std::io::{BufRead, BufReader, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;

/// One request the server saw.
#[derive(Clone, Debug)]
pub struct Seen {
    pub method: String,
    pub path: String,
    pub auth: Option<String>,
    pub range: Option<String>,
}

#[derive(Clone)]
pub struct FakeFile {
    pub path: String,
    pub body: Vec<u8>,
    /// Served like an LFS file: the resolve URL redirects to `/cdn/…`.
    pub lfs: bool,
    /// How many more GETs of the body stop at the file's midpoint and close the connection
    /// (`usize::MAX`: every one). A resumed GET that starts past the midpoint then sends nothing.
    pub cuts: Arc<AtomicUsize>,
    /// Answer a `Range` request with the whole file (200), as some servers do.
    pub ignore_range: bool,
    /// Send the ETag in its weak form, `W/"…"`.
    pub weak_etag: bool,
    /// Listed by the API but answered with 404 `EntryNotFound`.
    pub missing: bool,
    /// The GET body has no `Content-Length` (ends at connection close), so a cut is invisible
    /// to HTTP and only the announced size can catch it.
    pub no_length: bool,
}

impl FakeFile {
    pub fn new(path: &str, body: Vec<u8>) -> FakeFile {
        FakeFile {
            path: path.into(),
            body,
            lfs: false,
            cuts: Arc::new(AtomicUsize::new(0)),
            ignore_range: false,
            weak_etag: false,
            missing: false,
            no_length: false,
        }
    }

    /// The blob name the cache must use: the git blob id for plain files, the sha256 for LFS.
    /// Both are faked with a hash of the content; the client treats them as opaque.
    pub fn etag(&self) -> String {
        fake_hex(&self.body, if self.lfs { 64 } else { 40 })
    }

    /// For an LFS file the hub's plain `ETag` is that of the pointer file, not the content.
    fn pointer_etag(&self) -> String {
        fake_hex(self.path.as_bytes(), 40)
    }
}

#[derive(Clone)]
pub struct FakeRepo {
    pub id: String,
    pub commit: String,
    pub files: Vec<FakeFile>,
    pub token: Option<String>,
    /// A former name: requests for it get the hub's relative 307 to the current name.
    pub old_id: Option<String>,
    /// A dataset repo rather than a model repo: a separate namespace, so a model and a dataset
    /// may share an id.
    pub dataset: bool,
}

pub struct FakeHub {
    pub addr: SocketAddr,
    repos: Arc<Mutex<Vec<FakeRepo>>>,
    seen: Arc<Mutex<Vec<Seen>>>,
    cdn_addr: SocketAddr,
    stop: Arc<AtomicBool>,
    threads: Vec<JoinHandle<()>>,
}

impl FakeHub {
    /// Starts the hub and, on a second port (so another host as far as URLs go), its CDN.
    pub fn start(repos: Vec<FakeRepo>) -> FakeHub {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let cdn_listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = listener.local_addr().unwrap();
        let cdn_addr = cdn_listener.local_addr().unwrap();
        let repos = Arc::new(Mutex::new(repos));
        let seen = Arc::new(Mutex::new(Vec::new()));
        let stop = Arc::new(AtomicBool::new(false));
        let threads = [listener, cdn_listener]
            .map(|listener| {
                let (repos, seen, stop) = (repos.clone(), seen.clone(), stop.clone());
                std::thread::spawn(move || {
                    for stream in listener.incoming() {
                        if stop.load(Ordering::SeqCst) {
                            break;
                        }
                        let Ok(stream) = stream else { continue };
                        let (repos, seen) = (repos.clone(), seen.clone());
                        std::thread::spawn(move || serve(stream, cdn_addr, &repos, &seen));
                    }
                })
            })
            .into();
        FakeHub {
            addr,
            cdn_addr,
            repos,
            seen,
            stop,
            threads,
        }
    }

    pub fn endpoint(&self) -> String {
        format!("http://{}", self.addr)
    }

    pub fn seen(&self) -> Vec<Seen> {
        self.seen.lock().unwrap().clone()
    }

    pub fn clear_seen(&self) {
        self.seen.lock().unwrap().clear();
    }

    pub fn edit(&self, f: impl FnOnce(&mut Vec<FakeRepo>)) {
        f(&mut self.repos.lock().unwrap());
    }

    /// Stops accepting and closes the port, so later requests get "connection refused".
    pub fn stop(&mut self) {
        self.stop.store(true, Ordering::SeqCst);
        for (thread, addr) in self.threads.drain(..).zip([self.addr, self.cdn_addr]) {
            // Wake the blocking `accept` so the thread sees the flag and drops the listener.
            let _ = TcpStream::connect(addr);
            thread.join().unwrap();
        }
    }
}

impl Drop for FakeHub {
    fn drop(&mut self) {
        self.stop();
    }
}

pub fn fake_hex(data: &[u8], len: usize) -> String {
    let mut out = String::new();
    let mut seed = 0u64;
    while out.len() < len {
        let mut h = DefaultHasher::new();
        (seed, data).hash(&mut h);
        out.push_str(&format!("{:016x}", h.finish()));
        seed += 1;
    }
    out.truncate(len);
    out
}

struct Reply {
    status: u16,
    headers: Vec<(String, String)>,
    body: Vec<u8>,
    /// Send only this many body bytes, then close (a broken transfer).
    cut_at: Option<usize>,
    /// Leave out `Content-Length`: the body ends when the connection closes.
    no_length: bool,
}

impl Reply {
    fn new(status: u16) -> Reply {
        Reply {
            status,
            headers: Vec::new(),
            body: Vec::new(),
            cut_at: None,
            no_length: false,
        }
    }

    fn header(mut self, name: &str, value: impl Into<String>) -> Reply {
        self.headers.push((name.into(), value.into()));
        self
    }

    fn body(mut self, body: Vec<u8>) -> Reply {
        self.body = body;
        self
    }
}

fn serve(
    stream: TcpStream,
    cdn_addr: SocketAddr,
    repos: &Mutex<Vec<FakeRepo>>,
    seen: &Mutex<Vec<Seen>>,
) {
    let mut reader = BufReader::new(stream.try_clone().unwrap());
    let mut line = String::new();
    if reader.read_line(&mut line).unwrap_or(0) == 0 {
        return; // the wake-up connection from `stop`
    }
    let mut parts = line.split_whitespace();
    let method = parts.next().unwrap_or("").to_owned();
    let path = parts.next().unwrap_or("").to_owned();
    let mut auth = None;
    let mut range = None;
    loop {
        let mut header = String::new();
        if reader.read_line(&mut header).unwrap_or(0) == 0 || header.trim().is_empty() {
            break;
        }
        if let Some((name, value)) = header.split_once(':')
            && name.eq_ignore_ascii_case("authorization")
        {
            auth = Some(value.trim().to_owned());
        }
        if let Some((name, value)) = header.split_once(':')
            && name.eq_ignore_ascii_case("range")
        {
            range = Some(value.trim().to_owned());
        }
    }
    let request = Seen {
        method,
        path,
        auth,
        range,
    };
    seen.lock().unwrap().push(request.clone());
    let repos = repos.lock().unwrap().clone();
    let reply = route(&repos, cdn_addr, &request);
    write_reply(stream, &request.method, reply);
}

fn route(repos: &[FakeRepo], cdn_addr: SocketAddr, request: &Seen) -> Reply {
    let path = request.path.split('?').next().unwrap();
    let auth = request.auth.as_deref();
    if let Some(rest) = path.strip_prefix("/cdn/") {
        // The CDN serves content by hash to anyone holding the (signed) URL.
        let file = repos
            .iter()
            .flat_map(|r| &r.files)
            .find(|f| f.lfs && f.etag() == rest);
        return match file {
            Some(f) => content(f, request),
            None => Reply::new(404),
        };
    }
    let (dataset, repo, rest) = if let Some(api) = path.strip_prefix("/api/models/") {
        let Some((repo_id, revision)) = api.split_once("/revision/") else {
            return Reply::new(404);
        };
        (false, repo_id, Err(revision))
    } else if let Some(api) = path.strip_prefix("/api/datasets/") {
        let Some((repo_id, revision)) = api.split_once("/revision/") else {
            return Reply::new(404);
        };
        (true, repo_id, Err(revision))
    } else {
        let (dataset, rest) = match path.strip_prefix("/datasets/") {
            Some(rest) => (true, rest),
            None => (false, &path[1..]),
        };
        let Some((repo_id, rest)) = rest.split_once("/resolve/") else {
            return Reply::new(404);
        };
        (dataset, repo_id, Ok(rest))
    };
    let repos: Vec<&FakeRepo> = repos.iter().filter(|r| r.dataset == dataset).collect();
    if let Some(renamed) = repos.iter().find(|r| r.old_id.as_deref() == Some(repo)) {
        let moved = path.replacen(repo, &renamed.id, 1);
        return Reply::new(307).header("Location", moved);
    }
    let Some(repo) = repos.iter().find(|r| r.id == repo) else {
        return Reply::new(404).header("X-Error-Code", "RepoNotFound");
    };
    if let Some(token) = &repo.token
        && auth != Some(format!("Bearer {token}").as_str())
    {
        return Reply::new(401)
            .header("X-Error-Code", "RepoNotFound")
            .header("X-Error-Message", "Invalid username or password.");
    }
    match rest {
        Err(revision) => {
            if revision != "main" && revision != repo.commit {
                return Reply::new(404).header("X-Error-Code", "RevisionNotFound");
            }
            let siblings: Vec<String> = repo
                .files
                .iter()
                .map(|f| format!("{{\"rfilename\":\"{}\"}}", f.path))
                .collect();
            let json = format!(
                "{{\"id\":\"{}\",\"sha\":\"{}\",\"private\":false,\"siblings\":[{}]}}",
                repo.id,
                repo.commit,
                siblings.join(",")
            );
            Reply::new(200)
                .header("Content-Type", "application/json")
                .body(json.into_bytes())
        }
        Ok(rest) => {
            let (revision, file_path) = rest.split_once('/').unwrap();
            if revision != "main" && revision != repo.commit {
                return Reply::new(404).header("X-Error-Code", "RevisionNotFound");
            }
            let file = repo
                .files
                .iter()
                .find(|f| f.path == file_path && !f.missing);
            let Some(file) = file else {
                return Reply::new(404)
                    .header("X-Error-Code", "EntryNotFound")
                    .header("X-Repo-Commit", repo.commit.clone());
            };
            if file.lfs {
                // The hub's LFS answer: a redirect to a signed CDN URL, with the content's hash
                // and size in the X-Linked-* headers.
                Reply::new(302)
                    .header(
                        "Location",
                        format!("http://{cdn_addr}/cdn/{}?X-Amz-Signature=abc", file.etag()),
                    )
                    .header("X-Repo-Commit", repo.commit.clone())
                    .header("X-Linked-Etag", format!("\"{}\"", file.etag()))
                    .header("X-Linked-Size", file.body.len().to_string())
                    .header("ETag", format!("\"{}\"", file.pointer_etag()))
            } else {
                let etag = if file.weak_etag {
                    format!("W/\"{}\"", file.etag())
                } else {
                    format!("\"{}\"", file.etag())
                };
                content(file, request)
                    .header("X-Repo-Commit", repo.commit.clone())
                    .header("ETag", etag)
            }
        }
    }
}

fn content(file: &FakeFile, request: &Seen) -> Reply {
    let len = file.body.len();
    let start = match request
        .range
        .as_deref()
        .and_then(|r| r.strip_prefix("bytes="))
    {
        Some(r) if !file.ignore_range => r.trim_end_matches('-').parse::<usize>().unwrap().min(len),
        _ => 0,
    };
    let mut reply = if start > 0 {
        Reply::new(206)
            .header("Content-Range", format!("bytes {start}-{}/{len}", len - 1))
            .body(file.body[start..].to_vec())
    } else {
        Reply::new(200).body(file.body.clone())
    };
    let cuts = file.cuts.load(Ordering::SeqCst);
    if request.method == "GET" && cuts > 0 {
        if cuts != usize::MAX {
            file.cuts.fetch_sub(1, Ordering::SeqCst);
        }
        reply.cut_at = Some((len / 2).saturating_sub(start));
    }
    reply.no_length = file.no_length;
    reply
}

fn write_reply(mut stream: TcpStream, method: &str, reply: Reply) {
    let reason = match reply.status {
        200 => "OK",
        206 => "Partial Content",
        302 => "Found",
        307 => "Temporary Redirect",
        401 => "Unauthorized",
        404 => "Not Found",
        _ => "Other",
    };
    let mut head = format!("HTTP/1.1 {} {reason}\r\n", reply.status);
    for (name, value) in &reply.headers {
        head.push_str(&format!("{name}: {value}\r\n"));
    }
    if !reply.no_length {
        head.push_str(&format!("Content-Length: {}\r\n", reply.body.len()));
    }
    head.push_str("Connection: close\r\n\r\n");
    let _ = stream.write_all(head.as_bytes());
    if method != "HEAD" {
        let end = reply.cut_at.unwrap_or(reply.body.len());
        let _ = stream.write_all(&reply.body[..end]);
    }
    let _ = stream.flush();
    let _ = stream.shutdown(std::net::Shutdown::Both);
}
