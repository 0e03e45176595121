//! Reading the attribution maps (`--by-file`, `--by-peer`): bytes per process, object and
//! column, the objects' names, and the `[other]` rows.

use std::collections::{BTreeMap, HashMap as StdHashMap};

use aya::maps::{HashMap, MapData, PerCpuArray, PerCpuHashMap};
use zcprof_common::{
    Column, MAP_OBJECT_NAMES, MAP_OBJECTS, MAP_OBJECTS_OTHER, MAP_OBJECTS_RECENT, ObjectBytes,
    ObjectId, ObjectKey, ObjectName, RECENT_OBJECTS, RecentObject,
};

use super::{MapReadError, Probes};

/// The attribution maps of loaded programs.
pub(super) struct ObjectMaps {
    pub(super) bytes: PerCpuHashMap<MapData, ObjectKey, ObjectBytes>,
    pub(super) names: HashMap<MapData, ObjectId, ObjectName>,
    pub(super) other: PerCpuArray<MapData, ObjectBytes>,
    pub(super) recent: PerCpuArray<MapData, RecentObject>,
}

/// Everything the attribution maps hold, summed over the CPUs.
#[derive(Debug, Default)]
pub struct ObjectCounts {
    /// Bytes and calls per (process, column, kind, object).
    pub bytes: Vec<(ObjectKey, ObjectBytes)>,
    /// Each object's name as the kernel read it.
    pub names: BTreeMap<ObjectId, ObjectName>,
    /// What the kernel could not fit, per column.
    pub other: Vec<(Column, ObjectBytes)>,
}

fn err(map: &'static str) -> impl Fn(aya::maps::MapError) -> MapReadError {
    move |source| MapReadError { map, source }
}

fn add(a: ObjectBytes, b: &ObjectBytes) -> ObjectBytes {
    ObjectBytes {
        bytes: a.bytes + b.bytes,
        calls: a.calls + b.calls,
    }
}

fn sum(per_cpu: &[ObjectBytes]) -> ObjectBytes {
    per_cpu.iter().fold(ObjectBytes::default(), add)
}

impl Probes {
    /// What the attribution maps hold (empty unless loaded with `attribute`).
    pub fn objects(&self) -> Result<ObjectCounts, MapReadError> {
        let Some(maps) = &self.objects else {
            return Ok(ObjectCounts::default());
        };
        let mut out = ObjectCounts::default();
        let mut bytes: StdHashMap<ObjectKey, ObjectBytes> = StdHashMap::new();
        for entry in maps.bytes.iter() {
            let (key, values) = entry.map_err(err(MAP_OBJECTS))?;
            bytes.insert(key, sum(&values));
        }
        for entry in maps.names.iter() {
            let (id, name) = entry.map_err(err(MAP_OBJECT_NAMES))?;
            out.names.insert(id, name);
        }
        let mut other = [ObjectBytes::default(); Column::COUNT];
        for column in Column::ALL {
            let values = maps
                .other
                .get(&(column as u32), 0)
                .map_err(err(MAP_OBJECTS_OTHER))?;
            other[column as usize] = sum(&values);
        }
        // The bytes the kernel still adds up per CPU before they reach OBJECTS. Read after
        // OBJECTS: while programs run, a slot that moves its bytes there in between is missed
        // by this read (and counted by the next); once they are detached the sum is exact.
        for slot in 0..RECENT_OBJECTS {
            let values = maps.recent.get(&slot, 0).map_err(err(MAP_OBJECTS_RECENT))?;
            for r in values.iter().filter(|r| r.pending.calls > 0) {
                if r.other != 0 {
                    if let Some(o) = other.get_mut(r.key.column as usize) {
                        *o = add(*o, &r.pending);
                    }
                } else {
                    let e = bytes.entry(r.key).or_default();
                    *e = add(*e, &r.pending);
                }
            }
        }
        // An entry made at first sight holds no call until the slot moves its bytes there.
        out.bytes = bytes.into_iter().filter(|(_, b)| b.calls > 0).collect();
        for column in Column::ALL {
            let total = other[column as usize];
            if total.calls > 0 {
                out.other.push((column, total));
            }
        }
        Ok(out)
    }
}
