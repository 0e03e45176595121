//! Reading the attribution maps (`--by-file`, `--by-peer`): bytes per process, object and
//! column, the objects' names, and the `[other]` rows.

use std::collections::BTreeMap;

use aya::maps::{HashMap, MapData, PerCpuArray, PerCpuHashMap};
use zcprof_common::{
    Column, MAP_OBJECT_NAMES, MAP_OBJECTS, MAP_OBJECTS_OTHER, ObjectBytes, ObjectId, ObjectKey,
    ObjectName,
};

use super::{MapReadError, Probes};

/// The attribution maps of loaded programs.
pub(super) struct ObjectMaps {
    pub(super) bytes: PerCpuHashMap<MapData, ObjectKey, ObjectBytes>,
    pub(super) names: HashMap<MapData, ObjectId, ObjectName>,
    pub(super) other: PerCpuArray<MapData, ObjectBytes>,
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

fn sum(per_cpu: &[ObjectBytes]) -> ObjectBytes {
    per_cpu
        .iter()
        .fold(ObjectBytes::default(), |a, b| ObjectBytes {
            bytes: a.bytes + b.bytes,
            calls: a.calls + b.calls,
        })
}

impl Probes {
    /// What the attribution maps hold (empty unless loaded with `attribute`).
    pub fn objects(&self) -> Result<ObjectCounts, MapReadError> {
        let Some(maps) = &self.objects else {
            return Ok(ObjectCounts::default());
        };
        let mut out = ObjectCounts::default();
        for entry in maps.bytes.iter() {
            let (key, values) = entry.map_err(err(MAP_OBJECTS))?;
            out.bytes.push((key, sum(&values)));
        }
        for entry in maps.names.iter() {
            let (id, name) = entry.map_err(err(MAP_OBJECT_NAMES))?;
            out.names.insert(id, name);
        }
        for column in Column::ALL {
            let values = maps
                .other
                .get(&(column as u32), 0)
                .map_err(err(MAP_OBJECTS_OTHER))?;
            let total = sum(&values);
            if total.calls > 0 {
                out.other.push((column, total));
            }
        }
        Ok(out)
    }
}
