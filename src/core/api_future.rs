//! [`ApiFuture`]: the caller's handle on one logical operation (result slot, cancellation,
//! wait with a timeout, panic capture).

use crate::core::error::{Error, ErrorKind, Result};
use std::future::{Future, IntoFuture};
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, Weak};
use std::time::Duration;
use tokio::sync::Notify;
use tokio::time::Instant;

enum Slot<T> {
    Pending,
    Ready(Result<T>),
    Taken,
}

/// Everything of one operation the caller and the task share, in one allocation: the
/// result slot, the request id, and two flags each with the `Notify` its waiters sleep on
/// (no channels).
struct Shared<T> {
    slot: Mutex<Slot<T>>,
    request_id: Mutex<Option<String>>,
    done: AtomicBool,
    done_notify: Notify,
    cancelled: AtomicBool,
    cancel_notify: Notify,
    /// Run once when the operation is done ([`ApiFuture::on_done`]); dropped unrun when the
    /// operation's task is dropped unfinished (runtime shut down).
    hook: Mutex<Option<Hook>>,
}

/// A completion hook ([`ApiFuture::on_done`]).
type Hook = Box<dyn FnOnce() + Send>;

impl<T> Shared<T> {
    fn new(slot: Slot<T>, done: bool) -> Self {
        Shared {
            slot: Mutex::new(slot),
            request_id: Mutex::new(None),
            done: AtomicBool::new(done),
            done_notify: Notify::new(),
            cancelled: AtomicBool::new(false),
            cancel_notify: Notify::new(),
            hook: Mutex::new(None),
        }
    }

    /// Marks the operation done, wakes its waiters and runs its hook (on this thread).
    fn finish(&self, result: Result<T>) {
        *self.slot.lock().unwrap() = Slot::Ready(result);
        self.done.store(true, Ordering::Release);
        self.done_notify.notify_waiters();
        let hook = self.hook.lock().unwrap().take();
        if let Some(hook) = hook {
            hook();
        }
    }

    /// Resolves once `flag` is set (`notify` wakes every waiter when it is).
    async fn wait_flag(flag: &AtomicBool, notify: &Notify) {
        loop {
            let notified = notify.notified();
            let mut notified = std::pin::pin!(notified);
            notified.as_mut().enable();
            if flag.load(Ordering::Acquire) {
                return;
            }
            notified.await;
        }
    }
}

/// Where a running operation records its server request id.
trait RequestIdSink: Send + Sync {
    fn set(&self, id: &str);
}

impl<T: Send> RequestIdSink for Shared<T> {
    fn set(&self, id: &str) {
        *self.request_id.lock().unwrap() = Some(id.to_string());
    }
}

/// Lets a running operation publish its server request id.
#[derive(Clone)]
pub struct FutureHandle {
    shared: Weak<dyn RequestIdSink>,
}

impl FutureHandle {
    /// Records the server's request id once known.
    pub fn set_request_id(&self, id: &str) {
        if let Some(s) = self.shared.upgrade() {
            s.set(id);
        }
    }
}

/// The caller's handle on one logical operation (submission, polling and decoding).
///
/// Await it (it implements [`IntoFuture`]) or use [`ApiFuture::result_timeout`]. Dropping it
/// does not cancel the operation; [`ApiFuture::cancel`] does. Cloning shares the handle.
pub struct ApiFuture<T> {
    shared: Arc<Shared<T>>,
}

impl<T> Clone for ApiFuture<T> {
    fn clone(&self) -> Self {
        ApiFuture {
            shared: self.shared.clone(),
        }
    }
}

impl<T: Send + 'static> ApiFuture<T> {
    /// Runs `op` on `runtime`. A panic inside `op` becomes an error of kind `Panic`.
    ///
    /// Per operation this allocates the shared state, the operation's future (boxed) and a
    /// small task around it. The box is what keeps the task small: an operation's future can
    /// be kilobytes (a sample's was 13.8 KB before its stages were boxed; 904 bytes now,
    /// `tools/future_sizes.sh`), and a future moved into the task and then pinned there
    /// occupied two slots of the task's state (27.8 KB per pending sample then), copied on
    /// every move (the `memcpy` at the top of the W1 callgrind profile).
    pub fn spawn<F, Fut>(runtime: &tokio::runtime::Handle, op: F) -> Self
    where
        F: FnOnce(FutureHandle) -> Fut,
        Fut: Future<Output = Result<T>> + Send + 'static,
    {
        let shared = Arc::new(Shared::new(Slot::Pending, false));
        let weak: Weak<Shared<T>> = Arc::downgrade(&shared);
        let handle = FutureHandle { shared: weak };
        let mut op = Box::pin(op(handle));
        // The task's handle on the shared state. Owned by the task's future (captured, so
        // also when the runtime drops the task before its first poll): if the task ends
        // unfinished (runtime shut down), dropping it drops the hook unrun, which also breaks
        // the cycle of a hook that holds this future.
        let unhook = Unhook(shared.clone());
        // One task per operation: the operation itself, raced against cancellation (which
        // drops it, and with it any HTTP request in flight); a panic becomes an error.
        runtime.spawn(async move {
            let s2 = &unhook.0;
            let op = CatchUnwind(op.as_mut());
            let cancelled = Shared::<T>::wait_flag(&s2.cancelled, &s2.cancel_notify);
            let result = tokio::select! {
                r = op => r.unwrap_or_else(|p| Err(Error::new(ErrorKind::Panic, format!("internal panic: {}", panic_message(p))))),
                _ = cancelled => Err(Error::cancelled()),
            };
            let result = match (result, s2.request_id.lock().unwrap().clone()) {
                (Err(mut e), Some(id)) if e.request_id.is_none() => {
                    e.request_id = Some(id);
                    Err(e)
                }
                (r, _) => r,
            };
            s2.finish(result);
        });
        ApiFuture { shared }
    }

    /// Runs `hook` once, on the thread that completes the operation (a runtime worker),
    /// right after its result is stored; at once on this thread when it is already done.
    /// A hook registered later replaces an earlier one that has not run. If the operation's
    /// task is dropped unfinished (runtime shut down), `hook` is dropped without running.
    ///
    /// What the C ABI uses to complete its futures without a waiter task per operation.
    pub fn on_done(&self, hook: impl FnOnce() + Send + 'static) {
        let mut slot = self.shared.hook.lock().unwrap();
        if self.shared.done.load(Ordering::Acquire) {
            drop(slot);
            hook();
        } else {
            let replaced = slot.replace(Box::new(hook));
            drop(slot);
            drop(replaced); // outside the lock: dropping a hook may run arbitrary code
        }
    }

    /// A future that is already finished.
    pub fn ready(result: Result<T>) -> Self {
        ApiFuture {
            shared: Arc::new(Shared::new(Slot::Ready(result), true)),
        }
    }

    /// Requests cancellation: polling and any in-flight HTTP attempt stop; the result becomes
    /// a `Cancelled` error unless it was already finished. Idempotent; never blocks.
    pub fn cancel(&self) {
        self.shared.cancelled.store(true, Ordering::Release);
        self.shared.cancel_notify.notify_waiters();
    }

    /// Whether the operation finished (success, error or cancellation).
    pub fn is_done(&self) -> bool {
        self.shared.done.load(Ordering::Acquire)
    }

    /// The server's request id, once the submission was accepted.
    pub fn request_id(&self) -> Option<String> {
        self.shared.request_id.lock().unwrap().clone()
    }

    /// Waits until finished, without taking the result.
    pub async fn wait_done(&self) {
        Shared::<T>::wait_flag(&self.shared.done, &self.shared.done_notify).await
    }

    /// Takes the result if finished: `None` while pending; an `Err` of kind `User` when
    /// the result was already taken. Never blocks.
    pub fn try_take(&self) -> Option<Result<T>> {
        let mut slot = self.shared.slot.lock().unwrap();
        match std::mem::replace(&mut *slot, Slot::Taken) {
            Slot::Pending => {
                *slot = Slot::Pending;
                None
            }
            Slot::Ready(r) => Some(r),
            Slot::Taken => Some(Err(Error::user(
                "the result of this future was already taken",
            ))),
        }
    }

    /// Waits for the result and takes it.
    pub async fn result(self) -> Result<T> {
        self.wait_done().await;
        self.try_take().expect("finished futures have a result")
    }

    /// Waits at most `timeout`; on timeout returns a `Timeout` error and leaves the operation
    /// running (call again, or [`cancel`](Self::cancel) it).
    pub async fn result_timeout(&self, timeout: Duration) -> Result<T> {
        match tokio::time::timeout(timeout, self.wait_done()).await {
            Ok(()) => self.try_take().expect("finished futures have a result"),
            Err(_) => Err(Error::timeout(timeout)),
        }
    }
}

impl<T: Send + 'static> IntoFuture for ApiFuture<T> {
    type Output = Result<T>;
    type IntoFuture = Pin<Box<dyn Future<Output = Result<T>> + Send>>;
    fn into_future(self) -> Self::IntoFuture {
        Box::pin(self.result())
    }
}

/// The operation task's reference to its shared state; drops a completion hook that has not
/// run when the task ends (finished: the hook already ran and is gone).
struct Unhook<T>(Arc<Shared<T>>);

impl<T> Drop for Unhook<T> {
    fn drop(&mut self) {
        let hook = self.0.hook.lock().unwrap_or_else(|e| e.into_inner()).take();
        drop(hook);
    }
}

/// Polls a future, turning a panic during a poll into an `Err` with the panic payload.
struct CatchUnwind<'a, F>(Pin<&'a mut F>);

impl<F: Future> Future for CatchUnwind<'_, F> {
    type Output = std::result::Result<F::Output, Box<dyn std::any::Any + Send>>;

    fn poll(
        mut self: Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<Self::Output> {
        let inner = self.0.as_mut();
        match std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| inner.poll(cx))) {
            Ok(std::task::Poll::Pending) => std::task::Poll::Pending,
            Ok(std::task::Poll::Ready(v)) => std::task::Poll::Ready(Ok(v)),
            Err(payload) => std::task::Poll::Ready(Err(payload)),
        }
    }
}

fn panic_message(p: Box<dyn std::any::Any + Send>) -> String {
    p.downcast_ref::<&str>()
        .map(|s| s.to_string())
        .or_else(|| p.downcast_ref::<String>().cloned())
        .unwrap_or_else(|| "unknown panic".into())
}

/// Instant of an operation's start, for progress events and error messages.
pub fn now() -> Instant {
    Instant::now()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn on_done_runs_once_after_the_result_or_at_once_and_is_dropped_at_shutdown() {
        use std::sync::mpsc;
        let rt = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(1)
            .enable_all()
            .build()
            .unwrap();
        // Registered while pending: runs once, after the result is stored.
        let (go, wait) = tokio::sync::oneshot::channel::<()>();
        let f = ApiFuture::spawn(rt.handle(), |_| async move {
            let _ = wait.await;
            Ok::<_, Error>(5)
        });
        let (tx, rx) = mpsc::channel();
        let g = f.clone();
        let tx2 = tx.clone();
        f.on_done(move || tx2.send(g.try_take().unwrap().unwrap()).unwrap());
        assert!(rx.try_recv().is_err(), "not before the operation is done");
        go.send(()).unwrap();
        assert_eq!(rx.recv_timeout(Duration::from_secs(10)).unwrap(), 5);
        // Registered when already done: runs at once, on this thread.
        let here = std::thread::current().id();
        let (tx3, rx3) = mpsc::channel();
        ApiFuture::ready(Ok::<_, Error>(1))
            .on_done(move || tx3.send(std::thread::current().id()).unwrap());
        assert_eq!(rx3.try_recv().unwrap(), here);
        // A hook that reports "ran" when run and "dropped" when dropped (run or not).
        fn witnessed_hook() -> (impl FnOnce() + Send + 'static, mpsc::Receiver<&'static str>) {
            struct Dropped(mpsc::Sender<&'static str>);
            impl Drop for Dropped {
                fn drop(&mut self) {
                    let _ = self.0.send("dropped");
                }
            }
            let (tx, rx) = mpsc::channel();
            let witness = Dropped(tx.clone());
            let hook = move || {
                let _ = tx.send("ran");
                drop(witness);
            };
            (hook, rx)
        }
        // The task dropped unfinished (runtime shut down): dropped, never run.
        let pending = ApiFuture::spawn(rt.handle(), |_| std::future::pending::<Result<()>>());
        let (hook, rx4) = witnessed_hook();
        pending.on_done(hook);
        drop(rt);
        assert_eq!(
            rx4.recv_timeout(Duration::from_secs(10)).unwrap(),
            "dropped"
        );
        assert!(rx4.try_recv().is_err(), "never run");
        drop(tx);
        assert!(rx.try_recv().is_err(), "the first hook ran once");

        // The task dropped before its first poll (a runtime that never ran it): the hook is
        // dropped too, not left in the shared state (where it would hold the future forever).
        let idle = tokio::runtime::Builder::new_current_thread()
            .build()
            .unwrap();
        let never_polled = ApiFuture::spawn(idle.handle(), |_| async { Ok::<_, Error>(()) });
        let (hook, rx5) = witnessed_hook();
        never_polled.on_done(hook);
        drop(idle);
        assert_eq!(
            rx5.try_recv().unwrap(),
            "dropped",
            "dropped with the unpolled task"
        );
        assert!(rx5.try_recv().is_err(), "never run");
        assert!(!never_polled.is_done());
    }

    #[tokio::test]
    async fn result_cancel_timeout_and_panic() {
        let rt = tokio::runtime::Handle::current();
        let f = ApiFuture::spawn(&rt, |_| async { Ok::<_, Error>(7) });
        assert_eq!(f.clone().await.unwrap(), 7);
        assert!(f.try_take().unwrap().is_err(), "second take is an error");

        let pending = ApiFuture::spawn(&rt, |_| async {
            std::future::pending::<()>().await;
            Ok::<i32, Error>(1)
        });
        let e = pending
            .result_timeout(Duration::from_millis(20))
            .await
            .unwrap_err();
        assert_eq!(e.kind, ErrorKind::Timeout);
        assert!(!pending.is_done(), "a wait timeout does not cancel");
        pending.cancel();
        pending.cancel();
        assert_eq!(
            pending.clone().await.unwrap_err().kind,
            ErrorKind::Cancelled
        );

        let boom = ApiFuture::spawn(&rt, |_| async {
            if true {
                panic!("injected");
            }
            Ok::<i32, Error>(0)
        });
        let e = boom.await.unwrap_err();
        assert_eq!(e.kind, ErrorKind::Panic);
        assert!(e.message.contains("injected"));
    }
}
