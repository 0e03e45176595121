//! Which container a cgroup v2 path belongs to, for `zcprof serve --by container`.
//!
//! Container runtimes and the kubelet name their cgroups after the container's id and the
//! pod's uid; nothing else needs asking (no runtime socket, no API server), so a thread's
//! labels follow from the path the engine already resolves for `--by cgroup`. The layouts:
//!
//! | runtime | systemd driver | cgroupfs driver |
//! |---|---|---|
//! | `docker` | `/system.slice/docker-<id>.scope` | `/docker/<id>` |
//! | `containerd` (Kubernetes) | `/kubepods.slice/kubepods-<qos>.slice/kubepods-<qos>-pod<uid, _ for ->.slice/cri-containerd-<id>.scope` | |
//! | `cri-o` | `.../kubepods-<qos>-pod<uid>.slice/crio-<id>.scope` | `/kubepods/<qos>/pod<uid>/crio-<id>` |
//! | `cri` (Kubernetes; the path does not say which runtime) | | `/kubepods/<qos>/pod<uid>/<id>` |
//! | `podman` | `/machine.slice/libpod-<id>.scope`, rootless `.../user@<uid>.service/user.slice/libpod-<id>.scope` | |
//! | `systemd` (a unit, no container) | `/system.slice/ssh.service`, `/user.slice/user-1000.slice/session-3.scope` | |
//!
//! `<id>` is 64 lowercase hex digits; `<qos>` is `burstable` or `besteffort`, and guaranteed
//! pods have no qos level. A path in none of these is the host's: runtime empty, container
//! [`HOST`].

/// `container_id` of a thread in no container and no systemd unit.
pub const HOST: &str = "[host]";

/// What a cgroup path says about the threads in it: one `--by container` group.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Container {
    /// `docker`, `containerd`, `cri-o`, `podman`, `cri` (a Kubernetes container whose
    /// runtime the path does not name), `systemd` (a unit, no container), or empty (host).
    pub runtime: &'static str,
    /// The container's full id, the systemd unit's name, or [`HOST`].
    pub container_id: String,
    /// The Kubernetes pod's uid (with `-`), or empty outside a pod.
    pub pod_uid: String,
}

/// Directory name prefixes that name the runtime, before the id (and `.scope` with the
/// systemd driver). `libpod-conmon-<id>` and `crio-conmon-<id>` (the monitors) do not
/// match: `conmon-<id>` is not an id.
const PREFIXES: &[(&str, &str)] = &[
    ("docker-", "docker"),
    ("cri-containerd-", "containerd"),
    ("crio-", "cri-o"),
    ("libpod-", "podman"),
];

/// The container of the threads in cgroup `path` (below the cgroup root, e.g.
/// `/system.slice/docker-<id>.scope`). The innermost container wins: docker in docker, a
/// kind node's pods, a container's own sub-cgroups all name the container the threads run
/// in. The pod is the nearest one around that container (or unit).
pub fn container_of(path: &str) -> Container {
    let parts: Vec<&str> = path.split('/').filter(|p| !p.is_empty()).collect();
    let container = (0..parts.len())
        .rev()
        .find_map(|i| container_at(&parts, i).map(|(runtime, id)| (i, runtime, id)));
    let (at, runtime, container_id) = match container {
        Some((i, runtime, id)) => (i, runtime, id.to_string()),
        // A unit inside a container is the container's business; outside, it is the
        // nearest thing to a container a plain host has.
        None => match (0..parts.len()).rev().find(|&i| is_unit(parts[i])) {
            Some(i) => (i, "systemd", parts[i].to_string()),
            None => (parts.len(), "", HOST.to_string()),
        },
    };
    let pod_uid = (0..at)
        .rev()
        .find_map(|i| pod_at(&parts, i))
        .unwrap_or_default();
    Container {
        runtime,
        container_id,
        pod_uid,
    }
}

/// The runtime and id if `parts[i]` is a container's directory.
fn container_at<'a>(parts: &[&'a str], i: usize) -> Option<(&'static str, &'a str)> {
    let name = parts[i];
    let stem = name.strip_suffix(".scope").unwrap_or(name);
    for (prefix, runtime) in PREFIXES {
        if let Some(id) = stem.strip_prefix(prefix)
            && is_id(id)
        {
            return Some((runtime, id));
        }
    }
    if !is_id(name) || i == 0 {
        return None;
    }
    if parts[i - 1] == "docker" {
        Some(("docker", name))
    } else if pod_at(parts, i - 1).is_some() {
        Some(("cri", name))
    } else {
        None
    }
}

/// The pod uid if `parts[i]` is a pod's directory: `kubepods[-<qos>]-pod<uid>.slice` (systemd,
/// `_` for `-`; kind's nodes prefix `kubelet-`) or `pod<uid>` below a `kubepods` directory
/// (cgroupfs).
fn pod_at(parts: &[&str], i: usize) -> Option<String> {
    let name = parts[i];
    let (uid, kubepods) = match name.strip_suffix(".slice") {
        Some(stem) => {
            let (outer, last) = stem.rsplit_once('-')?;
            (last.strip_prefix("pod")?, outer.contains("kubepods"))
        }
        None => (
            name.strip_prefix("pod")?,
            parts[..i].iter().any(|p| p.contains("kubepods")),
        ),
    };
    // Uids are UUIDs, except static pods' (32 hex digits, a hash of the manifest).
    let uid_like = !uid.is_empty()
        && uid
            .bytes()
            .all(|b| b.is_ascii_hexdigit() || b == b'-' || b == b'_');
    (kubepods && uid_like).then(|| uid.replace('_', "-"))
}

/// A container id: 64 lowercase hex digits.
fn is_id(s: &str) -> bool {
    s.len() == 64 && s.bytes().all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f'))
}

/// A systemd service or scope (slices hold no processes of their own).
fn is_unit(name: &str) -> bool {
    [".service", ".scope"]
        .iter()
        .any(|s| name.len() > s.len() && name.ends_with(s))
}

#[cfg(test)]
mod tests {
    use super::*;

    const A: &str = "4c0e6a1f9d2b8e7a3c5f1d0b9a8e7c6d5b4a39281706f5e4d3c2b1a09f8e7d6c";
    const B: &str = "0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef";

    fn check(path: &str, runtime: &str, container_id: &str, pod_uid: &str) {
        let c = container_of(path);
        assert_eq!(
            (c.runtime, c.container_id.as_str(), c.pod_uid.as_str()),
            (runtime, container_id, pod_uid),
            "{path}"
        );
    }

    #[test]
    fn docker_systemd_and_cgroupfs() {
        check(&format!("/system.slice/docker-{A}.scope"), "docker", A, "");
        check(&format!("/docker/{A}"), "docker", A, "");
    }

    #[test]
    fn containerd_in_kubernetes_systemd_every_qos() {
        let pod = "kubepods-burstable-pod0f5c9b1e_2d3a_4b5c_8d6e_7f8091a2b3c4.slice";
        check(
            &format!("/kubepods.slice/kubepods-burstable.slice/{pod}/cri-containerd-{A}.scope"),
            "containerd",
            A,
            "0f5c9b1e-2d3a-4b5c-8d6e-7f8091a2b3c4",
        );
        let pod = "kubepods-besteffort-pod11111111_2222_3333_4444_555555555555.slice";
        check(
            &format!("/kubepods.slice/kubepods-besteffort.slice/{pod}/cri-containerd-{A}.scope"),
            "containerd",
            A,
            "11111111-2222-3333-4444-555555555555",
        );
        // Guaranteed: no qos level slice.
        check(
            &format!(
                "/kubepods.slice/kubepods-podaaaaaaaa_bbbb_cccc_dddd_eeeeeeeeeeee.slice/\
                 cri-containerd-{A}.scope"
            ),
            "containerd",
            A,
            "aaaaaaaa-bbbb-cccc-dddd-eeeeeeeeeeee",
        );
    }

    #[test]
    fn kubernetes_cgroupfs_names_no_runtime() {
        check(
            &format!("/kubepods/burstable/pod0f5c9b1e-2d3a-4b5c-8d6e-7f8091a2b3c4/{A}"),
            "cri",
            A,
            "0f5c9b1e-2d3a-4b5c-8d6e-7f8091a2b3c4",
        );
        check(
            &format!("/kubepods/pod11111111-2222-3333-4444-555555555555/{A}"),
            "cri",
            A,
            "11111111-2222-3333-4444-555555555555",
        );
        // Static pods' uids are a 32-digit hash.
        check(
            &format!("/kubepods/besteffort/pod5d27e1cbca8c4bd1e1a4d4a1f8e5a2ea/{A}"),
            "cri",
            A,
            "5d27e1cbca8c4bd1e1a4d4a1f8e5a2ea",
        );
    }

    #[test]
    fn cri_o_systemd_and_cgroupfs() {
        check(
            &format!(
                "/kubepods.slice/kubepods-besteffort.slice/\
                 kubepods-besteffort-pod11111111_2222_3333_4444_555555555555.slice/crio-{A}.scope"
            ),
            "cri-o",
            A,
            "11111111-2222-3333-4444-555555555555",
        );
        check(
            &format!("/kubepods/besteffort/pod11111111-2222-3333-4444-555555555555/crio-{A}"),
            "cri-o",
            A,
            "11111111-2222-3333-4444-555555555555",
        );
        // crun's sub-cgroup of the container.
        check(
            &format!(
                "/kubepods.slice/kubepods-pod11111111_2222_3333_4444_555555555555.slice/\
                 crio-{A}.scope/container"
            ),
            "cri-o",
            A,
            "11111111-2222-3333-4444-555555555555",
        );
    }

    #[test]
    fn podman_rootful_rootless_and_its_monitor() {
        check(&format!("/machine.slice/libpod-{A}.scope"), "podman", A, "");
        check(
            &format!("/user.slice/user-1000.slice/user@1000.service/user.slice/libpod-{A}.scope"),
            "podman",
            A,
            "",
        );
        // conmon watches the container from outside it: a plain systemd scope.
        check(
            &format!("/machine.slice/libpod-conmon-{A}.scope"),
            "systemd",
            &format!("libpod-conmon-{A}.scope"),
            "",
        );
    }

    #[test]
    fn systemd_units_outside_containers() {
        check("/system.slice/ssh.service", "systemd", "ssh.service", "");
        check(
            "/user.slice/user-1000.slice/session-3.scope",
            "systemd",
            "session-3.scope",
            "",
        );
        check("/init.scope", "systemd", "init.scope", "");
        check(
            "/user.slice/user-1000.slice/user@1000.service/app.slice/dbus.service",
            "systemd",
            "dbus.service",
            "",
        );
        // A service's own sub-cgroup is still the service.
        check(
            "/system.slice/containerd.service/extra",
            "systemd",
            "containerd.service",
            "",
        );
    }

    #[test]
    fn anything_else_is_the_host() {
        for path in ["/", "", "/user.slice", "/zcprof-test/plain", "/docker"] {
            check(path, "", HOST, "");
        }
        // Not ids: too short, upper case, not below `docker`.
        check(&format!("/docker/{}", &A[1..]), "", HOST, "");
        check(&format!("/docker/{}", A.to_uppercase()), "", HOST, "");
        check(&format!("/elsewhere/{A}"), "", HOST, "");
        check(
            &format!("/system.slice/docker-{}.scope", &A[1..]),
            "systemd",
            &format!("docker-{}.scope", &A[1..]),
            "",
        );
    }

    #[test]
    fn the_innermost_container_wins() {
        check(&format!("/docker/{A}/docker/{B}"), "docker", B, "");
        // A kind node (a docker container) running a pod.
        check(
            &format!(
                "/system.slice/docker-{A}.scope/kubelet.slice/kubelet-kubepods.slice/\
                 kubelet-kubepods-besteffort.slice/\
                 kubelet-kubepods-besteffort-pod11111111_2222_3333_4444_555555555555.slice/\
                 cri-containerd-{B}.scope"
            ),
            "containerd",
            B,
            "11111111-2222-3333-4444-555555555555",
        );
        // systemd inside a container: the container, not the unit.
        check(
            &format!("/system.slice/docker-{A}.scope/system.slice/nginx.service"),
            "docker",
            A,
            "",
        );
        // Docker in a pod: the inner container, in that pod.
        check(
            &format!("/kubepods/burstable/pod11111111-2222-3333-4444-555555555555/{A}/docker/{B}"),
            "docker",
            B,
            "11111111-2222-3333-4444-555555555555",
        );
    }
}
