//! io_uring: the key of the per-process io_uring ledger and the operations, each opcode with
//! its name in one table.

/// Key of [`crate::MAP_URING`]: io_uring operations of one process by opcode and column.
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct UringKey {
    /// Process that owns the ring.
    pub tgid: u32,
    /// `IORING_OP_*` opcode.
    pub opcode: u16,
    /// [`crate::Column`] discriminant.
    pub column: u16,
}

/// Declares the `IORING_OP_*` constants of [`op`] and [`op_name`] from one list.
macro_rules! uring_ops {
    ($( $op:ident = $nr:literal, $text:literal; )*) => {
        /// `IORING_OP_*` opcodes (include/uapi/linux/io_uring.h).
        pub mod op {
            $(
                #[doc = concat!("`IORING_OP_", stringify!($op), "`")]
                pub const $op: u8 = $nr;
            )*
        }

        /// Name of io_uring opcode `op` (`"unknown"` for one newer than this table).
        pub const fn op_name(op: u16) -> &'static str {
            match op {
                $( $nr => $text, )*
                _ => "unknown",
            }
        }
    };
}

uring_ops! {
    NOP = 0, "nop";
    READV = 1, "readv";
    WRITEV = 2, "writev";
    FSYNC = 3, "fsync";
    READ_FIXED = 4, "read_fixed";
    WRITE_FIXED = 5, "write_fixed";
    POLL_ADD = 6, "poll_add";
    POLL_REMOVE = 7, "poll_remove";
    SYNC_FILE_RANGE = 8, "sync_file_range";
    SENDMSG = 9, "sendmsg";
    RECVMSG = 10, "recvmsg";
    TIMEOUT = 11, "timeout";
    TIMEOUT_REMOVE = 12, "timeout_remove";
    ACCEPT = 13, "accept";
    ASYNC_CANCEL = 14, "async_cancel";
    LINK_TIMEOUT = 15, "link_timeout";
    CONNECT = 16, "connect";
    FALLOCATE = 17, "fallocate";
    OPENAT = 18, "openat";
    CLOSE = 19, "close";
    FILES_UPDATE = 20, "files_update";
    STATX = 21, "statx";
    READ = 22, "read";
    WRITE = 23, "write";
    FADVISE = 24, "fadvise";
    MADVISE = 25, "madvise";
    SEND = 26, "send";
    RECV = 27, "recv";
    OPENAT2 = 28, "openat2";
    EPOLL_CTL = 29, "epoll_ctl";
    SPLICE = 30, "splice";
    PROVIDE_BUFFERS = 31, "provide_buffers";
    REMOVE_BUFFERS = 32, "remove_buffers";
    TEE = 33, "tee";
    SHUTDOWN = 34, "shutdown";
    RENAMEAT = 35, "renameat";
    UNLINKAT = 36, "unlinkat";
    MKDIRAT = 37, "mkdirat";
    SYMLINKAT = 38, "symlinkat";
    LINKAT = 39, "linkat";
    MSG_RING = 40, "msg_ring";
    FSETXATTR = 41, "fsetxattr";
    SETXATTR = 42, "setxattr";
    FGETXATTR = 43, "fgetxattr";
    GETXATTR = 44, "getxattr";
    SOCKET = 45, "socket";
    URING_CMD = 46, "uring_cmd";
    SEND_ZC = 47, "send_zc";
    SENDMSG_ZC = 48, "sendmsg_zc";
    READ_MULTISHOT = 49, "read_multishot";
    WAITID = 50, "waitid";
    FUTEX_WAIT = 51, "futex_wait";
    FUTEX_WAKE = 52, "futex_wake";
    FUTEX_WAITV = 53, "futex_waitv";
    FIXED_FD_INSTALL = 54, "fixed_fd_install";
    FTRUNCATE = 55, "ftruncate";
    BIND = 56, "bind";
    LISTEN = 57, "listen";
    RECV_ZC = 58, "recv_zc";
    EPOLL_WAIT = 59, "epoll_wait";
    READV_FIXED = 60, "readv_fixed";
    WRITEV_FIXED = 61, "writev_fixed";
    PIPE = 62, "pipe";
}

/// IORING_CQE_F_NOTIF: the second CQE of a zero-copy send, saying the buffer is free again.
pub const CQE_F_NOTIF: u32 = 1 << 3;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn opcodes_and_names_agree() {
        // Spot checks against include/uapi/linux/io_uring.h.
        assert_eq!((op::READV, op_name(1)), (1, "readv"));
        assert_eq!((op::CLOSE, op_name(19)), (19, "close"));
        assert_eq!((op::SEND_ZC, op_name(47)), (47, "send_zc"));
        assert_eq!((op::PIPE, op_name(62)), (62, "pipe"));
        assert_eq!(op_name(63), "unknown");
    }
}
