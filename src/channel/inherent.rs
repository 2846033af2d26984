//! Every [`Channel`](crate::Channel) form as an inherent method of the
//! shared-memory channel types, generated once for [`Queue`](crate::Queue)
//! and [`Pipe`](crate::Pipe): code using one of them needs no trait import.

/// Every form of [`Channel`](crate::Channel) as an
/// inherent method of a shared-memory channel type, forwarding to the
/// trait, so that code using one type needs no `use mulproc::Channel`.
macro_rules! inherent_forms {
    ($ty:ty) => {
        /// The [`Channel`](crate::Channel) forms, callable without importing
        /// the trait; each is documented there.
        impl $ty {
            /// See [`Channel::send_with`](crate::Channel::send_with).
            #[inline]
            pub fn send_with<D: AsRef<[u8]>>(
                &self,
                msg: $crate::Message<D>,
                wait: $crate::Wait,
            ) -> Result<(), $crate::TrySendError<$crate::Message<D>>> {
                <Self as $crate::Channel>::send_with(self, msg, wait)
            }
            /// See [`Channel::recv_with`](crate::Channel::recv_with).
            #[inline]
            pub fn recv_with(
                &self,
                filter: $crate::Filter<'_>,
                wait: $crate::Wait,
            ) -> Result<$crate::RecvGuard<'_>, $crate::RecvTimeoutError> {
                <Self as $crate::Channel>::recv_with(self, filter, wait)
            }
            /// See [`Channel::send_retry`](crate::Channel::send_retry).
            pub fn send_retry(&self) -> $crate::SendRetry {
                <Self as $crate::Channel>::send_retry(self)
            }
            /// See [`Channel::try_send`](crate::Channel::try_send).
            #[inline]
            pub fn try_send<D: AsRef<[u8]>>(
                &self,
                msg: $crate::Message<D>,
            ) -> Result<(), $crate::TrySendError<$crate::Message<D>>> {
                <Self as $crate::Channel>::try_send(self, msg)
            }
            /// See [`Channel::send`](crate::Channel::send).
            #[inline]
            pub fn send<D: AsRef<[u8]>>(
                &self,
                msg: $crate::Message<D>,
            ) -> Result<(), $crate::SendError<$crate::Message<D>>> {
                <Self as $crate::Channel>::send(self, msg)
            }
            /// See [`Channel::send_timeout`](crate::Channel::send_timeout).
            pub fn send_timeout<D: AsRef<[u8]>>(
                &self,
                msg: $crate::Message<D>,
                timeout: std::time::Duration,
            ) -> Result<(), $crate::SendError<$crate::Message<D>>> {
                <Self as $crate::Channel>::send_timeout(self, msg, timeout)
            }
            /// See [`Channel::send_deadline`](crate::Channel::send_deadline).
            pub fn send_deadline<D: AsRef<[u8]>>(
                &self,
                msg: $crate::Message<D>,
                deadline: std::time::Instant,
            ) -> Result<(), $crate::SendError<$crate::Message<D>>> {
                <Self as $crate::Channel>::send_deadline(self, msg, deadline)
            }
            /// See [`Channel::try_send_batch`](crate::Channel::try_send_batch).
            pub fn try_send_batch<D: AsRef<[u8]>>(
                &self,
                msgs: &[$crate::Message<D>],
            ) -> Result<usize, $crate::TrySendError<()>> {
                <Self as $crate::Channel>::try_send_batch(self, msgs)
            }
            /// See [`Channel::try_recv_batch`](crate::Channel::try_recv_batch).
            pub fn try_recv_batch<F>(&self, max: usize, f: F) -> Result<usize, $crate::TryRecvError>
            where
                F: FnMut(&$crate::Header, &[u8]),
            {
                <Self as $crate::Channel>::try_recv_batch(self, max, f)
            }
            /// See [`Channel::try_recv`](crate::Channel::try_recv).
            #[inline]
            pub fn try_recv(&self) -> Result<$crate::Message, $crate::TryRecvError> {
                <Self as $crate::Channel>::try_recv(self)
            }
            /// See [`Channel::recv`](crate::Channel::recv).
            #[inline]
            pub fn recv(&self) -> Result<$crate::Message, $crate::RecvError> {
                <Self as $crate::Channel>::recv(self)
            }
            /// See [`Channel::recv_timeout`](crate::Channel::recv_timeout).
            pub fn recv_timeout(
                &self,
                timeout: std::time::Duration,
            ) -> Result<$crate::Message, $crate::RecvTimeoutError> {
                <Self as $crate::Channel>::recv_timeout(self, timeout)
            }
            /// See [`Channel::recv_deadline`](crate::Channel::recv_deadline).
            pub fn recv_deadline(
                &self,
                deadline: std::time::Instant,
            ) -> Result<$crate::Message, $crate::RecvTimeoutError> {
                <Self as $crate::Channel>::recv_deadline(self, deadline)
            }
            /// See [`Channel::try_recv_ref`](crate::Channel::try_recv_ref).
            #[inline]
            pub fn try_recv_ref(&self) -> Result<$crate::RecvGuard<'_>, $crate::TryRecvError> {
                <Self as $crate::Channel>::try_recv_ref(self)
            }
            /// See [`Channel::recv_ref`](crate::Channel::recv_ref).
            #[inline]
            pub fn recv_ref(&self) -> Result<$crate::RecvGuard<'_>, $crate::RecvError> {
                <Self as $crate::Channel>::recv_ref(self)
            }
            /// See [`Channel::recv_ref_timeout`](crate::Channel::recv_ref_timeout).
            pub fn recv_ref_timeout(
                &self,
                timeout: std::time::Duration,
            ) -> Result<$crate::RecvGuard<'_>, $crate::RecvTimeoutError> {
                <Self as $crate::Channel>::recv_ref_timeout(self, timeout)
            }
            /// See [`Channel::recv_ref_deadline`](crate::Channel::recv_ref_deadline).
            pub fn recv_ref_deadline(
                &self,
                deadline: std::time::Instant,
            ) -> Result<$crate::RecvGuard<'_>, $crate::RecvTimeoutError> {
                <Self as $crate::Channel>::recv_ref_deadline(self, deadline)
            }
            /// See [`Channel::try_recv_into`](crate::Channel::try_recv_into).
            #[inline]
            pub fn try_recv_into(
                &self,
                buf: &mut Vec<u8>,
            ) -> Result<$crate::Header, $crate::TryRecvError> {
                <Self as $crate::Channel>::try_recv_into(self, buf)
            }
            /// See [`Channel::recv_into`](crate::Channel::recv_into).
            #[inline]
            pub fn recv_into(
                &self,
                buf: &mut Vec<u8>,
            ) -> Result<$crate::Header, $crate::RecvError> {
                <Self as $crate::Channel>::recv_into(self, buf)
            }
            /// See [`Channel::recv_into_timeout`](crate::Channel::recv_into_timeout).
            pub fn recv_into_timeout(
                &self,
                buf: &mut Vec<u8>,
                timeout: std::time::Duration,
            ) -> Result<$crate::Header, $crate::RecvTimeoutError> {
                <Self as $crate::Channel>::recv_into_timeout(self, buf, timeout)
            }
            /// See [`Channel::recv_into_deadline`](crate::Channel::recv_into_deadline).
            pub fn recv_into_deadline(
                &self,
                buf: &mut Vec<u8>,
                deadline: std::time::Instant,
            ) -> Result<$crate::Header, $crate::RecvTimeoutError> {
                <Self as $crate::Channel>::recv_into_deadline(self, buf, deadline)
            }
            /// See [`Channel::try_recv_where`](crate::Channel::try_recv_where).
            pub fn try_recv_where<F>(
                &self,
                pred: F,
            ) -> Result<$crate::Message, $crate::TryRecvError>
            where
                F: FnMut(&$crate::Header, &[u8]) -> bool,
            {
                <Self as $crate::Channel>::try_recv_where(self, pred)
            }
            /// See [`Channel::recv_where`](crate::Channel::recv_where).
            pub fn recv_where<F>(&self, pred: F) -> Result<$crate::Message, $crate::RecvError>
            where
                F: FnMut(&$crate::Header, &[u8]) -> bool,
            {
                <Self as $crate::Channel>::recv_where(self, pred)
            }
            /// See [`Channel::recv_where_timeout`](crate::Channel::recv_where_timeout).
            pub fn recv_where_timeout<F>(
                &self,
                pred: F,
                timeout: std::time::Duration,
            ) -> Result<$crate::Message, $crate::RecvTimeoutError>
            where
                F: FnMut(&$crate::Header, &[u8]) -> bool,
            {
                <Self as $crate::Channel>::recv_where_timeout(self, pred, timeout)
            }
            /// See [`Channel::recv_where_deadline`](crate::Channel::recv_where_deadline).
            pub fn recv_where_deadline<F>(
                &self,
                pred: F,
                deadline: std::time::Instant,
            ) -> Result<$crate::Message, $crate::RecvTimeoutError>
            where
                F: FnMut(&$crate::Header, &[u8]) -> bool,
            {
                <Self as $crate::Channel>::recv_where_deadline(self, pred, deadline)
            }
            /// See [`Channel::try_recv_for_me`](crate::Channel::try_recv_for_me).
            pub fn try_recv_for_me(&self) -> Result<$crate::Message, $crate::TryRecvError> {
                <Self as $crate::Channel>::try_recv_for_me(self)
            }
            /// See [`Channel::recv_for_me`](crate::Channel::recv_for_me).
            pub fn recv_for_me(&self) -> Result<$crate::Message, $crate::RecvError> {
                <Self as $crate::Channel>::recv_for_me(self)
            }
            /// See [`Channel::recv_for_me_timeout`](crate::Channel::recv_for_me_timeout).
            pub fn recv_for_me_timeout(
                &self,
                timeout: std::time::Duration,
            ) -> Result<$crate::Message, $crate::RecvTimeoutError> {
                <Self as $crate::Channel>::recv_for_me_timeout(self, timeout)
            }
            /// See [`Channel::recv_for_me_deadline`](crate::Channel::recv_for_me_deadline).
            pub fn recv_for_me_deadline(
                &self,
                deadline: std::time::Instant,
            ) -> Result<$crate::Message, $crate::RecvTimeoutError> {
                <Self as $crate::Channel>::recv_for_me_deadline(self, deadline)
            }
            /// See [`Channel::try_recv_from`](crate::Channel::try_recv_from).
            pub fn try_recv_from(
                &self,
                sender: u32,
            ) -> Result<$crate::Message, $crate::TryRecvError> {
                <Self as $crate::Channel>::try_recv_from(self, sender)
            }
            /// See [`Channel::recv_from`](crate::Channel::recv_from).
            pub fn recv_from(&self, sender: u32) -> Result<$crate::Message, $crate::RecvError> {
                <Self as $crate::Channel>::recv_from(self, sender)
            }
            /// See [`Channel::recv_from_timeout`](crate::Channel::recv_from_timeout).
            pub fn recv_from_timeout(
                &self,
                sender: u32,
                timeout: std::time::Duration,
            ) -> Result<$crate::Message, $crate::RecvTimeoutError> {
                <Self as $crate::Channel>::recv_from_timeout(self, sender, timeout)
            }
            /// See [`Channel::recv_from_deadline`](crate::Channel::recv_from_deadline).
            pub fn recv_from_deadline(
                &self,
                sender: u32,
                deadline: std::time::Instant,
            ) -> Result<$crate::Message, $crate::RecvTimeoutError> {
                <Self as $crate::Channel>::recv_from_deadline(self, sender, deadline)
            }
        }

        /// The serde [`Channel`](crate::Channel) forms (feature `serde`),
        /// callable without importing the trait.
        #[cfg(feature = "serde")]
        impl $ty {
            /// See [`Channel::try_send_value`](crate::Channel::try_send_value).
            pub fn try_send_value<T: serde::Serialize + ?Sized>(
                &self,
                request: $crate::Request,
                recipient: Option<u32>,
                value: &T,
            ) -> Result<(), $crate::ValueSendError> {
                <Self as $crate::Channel>::try_send_value(self, request, recipient, value)
            }
            /// See [`Channel::send_value`](crate::Channel::send_value).
            pub fn send_value<T: serde::Serialize + ?Sized>(
                &self,
                request: $crate::Request,
                recipient: Option<u32>,
                value: &T,
            ) -> Result<(), $crate::ValueSendError> {
                <Self as $crate::Channel>::send_value(self, request, recipient, value)
            }
            /// See [`Channel::send_value_timeout`](crate::Channel::send_value_timeout).
            pub fn send_value_timeout<T: serde::Serialize + ?Sized>(
                &self,
                request: $crate::Request,
                recipient: Option<u32>,
                value: &T,
                timeout: std::time::Duration,
            ) -> Result<(), $crate::ValueSendError> {
                <Self as $crate::Channel>::send_value_timeout(
                    self, request, recipient, value, timeout,
                )
            }
            /// See [`Channel::send_value_deadline`](crate::Channel::send_value_deadline).
            pub fn send_value_deadline<T: serde::Serialize + ?Sized>(
                &self,
                request: $crate::Request,
                recipient: Option<u32>,
                value: &T,
                deadline: std::time::Instant,
            ) -> Result<(), $crate::ValueSendError> {
                <Self as $crate::Channel>::send_value_deadline(
                    self, request, recipient, value, deadline,
                )
            }
            /// See [`Channel::try_recv_value`](crate::Channel::try_recv_value).
            pub fn try_recv_value<T: serde::de::DeserializeOwned>(
                &self,
            ) -> Result<($crate::Header, T), $crate::RecvValueError> {
                <Self as $crate::Channel>::try_recv_value(self)
            }
            /// See [`Channel::recv_value`](crate::Channel::recv_value).
            pub fn recv_value<T: serde::de::DeserializeOwned>(
                &self,
            ) -> Result<($crate::Header, T), $crate::RecvValueError> {
                <Self as $crate::Channel>::recv_value(self)
            }
            /// See [`Channel::recv_value_timeout`](crate::Channel::recv_value_timeout).
            pub fn recv_value_timeout<T: serde::de::DeserializeOwned>(
                &self,
                timeout: std::time::Duration,
            ) -> Result<($crate::Header, T), $crate::RecvValueError> {
                <Self as $crate::Channel>::recv_value_timeout(self, timeout)
            }
            /// See [`Channel::recv_value_deadline`](crate::Channel::recv_value_deadline).
            pub fn recv_value_deadline<T: serde::de::DeserializeOwned>(
                &self,
                deadline: std::time::Instant,
            ) -> Result<($crate::Header, T), $crate::RecvValueError> {
                <Self as $crate::Channel>::recv_value_deadline(self, deadline)
            }
        }
    };
}
pub(crate) use inherent_forms;
