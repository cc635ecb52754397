//! Egress: which cloud bills the bytes a store URL sends, the price table of sending bytes
//! out of a cloud (an estimate, in US dollars per GiB), and what a dry run reports per target.
//!
//! The price of sending from a source to a destination is the source cloud's row: `within`
//! when both are in the same cloud, `out` otherwise (internet egress). A local source is an
//! upload: ingress is free everywhere. This assumes ferry runs beside its source (the sidecar
//! next to the trainer); where it does not, a flag or the config says the price.

use std::collections::BTreeMap;

use serde::Serialize;

/// Bytes in a GiB.
pub const GIB: f64 = 1_073_741_824.0;

/// One source cloud's prices, US dollars per GiB sent.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct PriceRow {
    /// The cloud, as [`cloud_of`] names it.
    pub cloud: &'static str,
    /// To a store in the same cloud (same region assumed: free).
    pub within: f64,
    /// To anywhere else: the cloud's internet egress, first price tier.
    pub out: f64,
}

/// The default table: list prices of the first internet egress tier (late 2026). A new cloud
/// is one row here and one scheme in [`cloud_of`].
pub const DEFAULT_PRICES: &[PriceRow] = &[
    PriceRow {
        cloud: "local",
        within: 0.0,
        out: 0.0,
    },
    PriceRow {
        cloud: "aws",
        within: 0.0,
        out: 0.09,
    },
    PriceRow {
        cloud: "azure",
        within: 0.0,
        out: 0.087,
    },
    PriceRow {
        cloud: "gcp",
        within: 0.0,
        out: 0.12,
    },
];

/// The cloud that bills bytes sent from `url` (a store URL as ferry prints it): `aws` for
/// `s3://`, `azure` for `az://`, `gcp` for `gs://`, `local` for anything else.
pub fn cloud_of(url: &str) -> &'static str {
    match url.split_once("://").map(|(scheme, _)| scheme) {
        Some("s3") => "aws",
        Some("az" | "azure") => "azure",
        Some("gs") => "gcp",
        _ => "local",
    }
}

/// Where a price came from.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum PriceBasis {
    /// The built-in table ([`DEFAULT_PRICES`]).
    Default,
    /// The config's `[egress_prices]`.
    Config,
    /// `--price-per-gib` on the command line.
    Flag,
    /// No row for the source cloud: counted as free, which is likely wrong.
    Unknown,
}

/// The price table in force: the defaults, with per-cloud `out` prices from the config and
/// one flat price from the command line over everything.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Prices {
    config: BTreeMap<String, f64>,
    flag: Option<f64>,
}

/// The price of one route.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Quote {
    /// The cloud the bytes leave.
    pub from_cloud: &'static str,
    /// The cloud they arrive in.
    pub to_cloud: &'static str,
    /// US dollars per GiB sent.
    pub usd_per_gib: f64,
    /// Where the price came from.
    pub basis: PriceBasis,
}

impl Prices {
    /// The defaults with the config's per-cloud egress prices (`cloud = usd_per_gib`).
    pub fn with_config(mut self, config: &BTreeMap<String, f64>) -> Self {
        self.config
            .extend(config.iter().map(|(k, v)| (k.clone(), *v)));
        self
    }

    /// One price per GiB for every route (`--price-per-gib`).
    pub fn with_flag(mut self, usd_per_gib: Option<f64>) -> Self {
        self.flag = usd_per_gib.or(self.flag);
        self
    }

    /// The price of sending from `from_url` to `to_url`.
    pub fn quote(&self, from_url: &str, to_url: &str) -> Quote {
        let (from_cloud, to_cloud) = (cloud_of(from_url), cloud_of(to_url));
        let quote = |usd_per_gib, basis| Quote {
            from_cloud,
            to_cloud,
            usd_per_gib,
            basis,
        };
        if let Some(p) = self.flag {
            return quote(p, PriceBasis::Flag);
        }
        let row = DEFAULT_PRICES.iter().find(|r| r.cloud == from_cloud);
        if from_cloud == to_cloud {
            return quote(row.map_or(0.0, |r| r.within), PriceBasis::Default);
        }
        if let Some(p) = self.config.get(from_cloud) {
            return quote(*p, PriceBasis::Config);
        }
        match row {
            Some(r) => quote(r.out, PriceBasis::Default),
            None => quote(0.0, PriceBasis::Unknown),
        }
    }
}

/// An item of a price list that is not `CLOUD=USD_PER_GIB`.
#[derive(Debug, thiserror::Error)]
#[error("{item:?} is not CLOUD=USD_PER_GIB with a price of 0 or more (e.g. aws=0.09; clouds: local, aws, azure, gcp)")]
pub struct PriceListError {
    /// The item as written.
    pub item: String,
}

/// Parses `cloud=usd,cloud=usd` (US dollars per GiB sent out of each cloud).
pub fn parse_prices(s: &str) -> Result<BTreeMap<String, f64>, PriceListError> {
    let mut out = BTreeMap::new();
    for item in s.split(',').map(str::trim).filter(|i| !i.is_empty()) {
        let parsed = item
            .split_once('=')
            .and_then(|(c, p)| Some((c.trim(), p.trim().parse::<f64>().ok()?)))
            .filter(|(c, p)| !c.is_empty() && p.is_finite() && *p >= 0.0);
        let Some((cloud, price)) = parsed else {
            return Err(PriceListError { item: item.into() });
        };
        out.insert(cloud.to_string(), price);
    }
    Ok(out)
}

/// What a dry run forecasts for one target.
#[derive(Debug, Clone, Serialize)]
pub struct DryTarget {
    /// The target repository's URL.
    pub repo: String,
    /// Bytes of packs and pack indexes (the report's `bytes_uploaded` for this target).
    pub bytes_packs: u64,
    /// Bytes of snapshot objects.
    pub bytes_snapshots: u64,
    /// Bytes of ref log entries.
    pub bytes_refs: u64,
    /// Bytes of the repository's config, when the run would create the repository.
    pub bytes_config: u64,
    /// Everything the run would send to this target.
    pub bytes_total: u64,
    /// The price used.
    pub price: Quote,
    /// `bytes_total` at that price, in US dollars.
    pub usd: f64,
}

impl DryTarget {
    /// A target's forecast priced by `quote`.
    pub fn priced(repo: String, sizes: [u64; 4], price: Quote) -> Self {
        let [packs, snapshots, refs, config] = sizes;
        let total = packs + snapshots + refs + config;
        Self {
            repo,
            bytes_packs: packs,
            bytes_snapshots: snapshots,
            bytes_refs: refs,
            bytes_config: config,
            bytes_total: total,
            usd: total as f64 / GIB * price.usd_per_gib,
            price,
        }
    }
}

/// A dry run's forecast: nothing was written; the bytes are what the run would send and the
/// dollars an estimate from the price table.
#[derive(Debug, Clone, Serialize)]
pub struct DryRun {
    /// Always true: the dollars are an estimate from list prices, not a bill.
    pub estimate: bool,
    /// One forecast per target, in the order given.
    pub targets: Vec<DryTarget>,
    /// Bytes over every target.
    pub bytes_total: u64,
    /// Dollars over every target.
    pub usd_total: f64,
}

impl DryRun {
    /// The totals of `targets`.
    pub fn of(targets: Vec<DryTarget>) -> Self {
        Self {
            estimate: true,
            bytes_total: targets.iter().map(|t| t.bytes_total).sum(),
            usd_total: targets.iter().map(|t| t.usd).sum(),
            targets,
        }
    }
}

/// The length of the ref log entry number `seq` of ref `name` pointing at `snapshot`.
pub fn ref_entry_len(name: &str, seq: u64, snapshot: crate::ids::SnapshotId) -> u64 {
    let entry = crate::repo::RefEntry {
        name: name.to_string(),
        seq,
        snapshot,
        time: humantime::format_rfc3339_millis(std::time::SystemTime::now()).to_string(),
    };
    serde_json::to_vec(&entry).map_or(0, |b| b.len() as u64)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn clouds_come_from_the_scheme() {
        assert_eq!(cloud_of("s3://b/p"), "aws");
        assert_eq!(cloud_of("az://c"), "azure");
        assert_eq!(cloud_of("gs://b/p"), "gcp");
        assert_eq!(cloud_of("file:///data"), "local");
        assert_eq!(cloud_of("/data"), "local");
        assert!(DEFAULT_PRICES.iter().any(|r| r.cloud == "gcp"));
    }

    #[test]
    fn the_table_prices_each_route() {
        let p = Prices::default();
        let q = p.quote("file:///ckpt", "s3://b/r");
        assert_eq!((q.usd_per_gib, q.basis), (0.0, PriceBasis::Default));
        assert_eq!(p.quote("s3://a", "az://c").usd_per_gib, 0.09);
        assert_eq!(p.quote("az://c", "s3://a").usd_per_gib, 0.087);
        assert_eq!(p.quote("gs://g", "s3://a").usd_per_gib, 0.12);
        assert_eq!(p.quote("s3://a", "s3://b").usd_per_gib, 0.0);
        assert_eq!(p.quote("s3://a", "file:///x").usd_per_gib, 0.09);
    }

    #[test]
    fn config_then_flag_override_the_defaults() {
        let config = BTreeMap::from([("aws".to_string(), 0.05)]);
        let p = Prices::default().with_config(&config);
        let q = p.quote("s3://a", "az://c");
        assert_eq!((q.usd_per_gib, q.basis), (0.05, PriceBasis::Config));
        assert_eq!(p.quote("az://c", "s3://a").usd_per_gib, 0.087);
        let p = p.with_flag(Some(0.2));
        let q = p.quote("file:///x", "az://c");
        assert_eq!((q.usd_per_gib, q.basis), (0.2, PriceBasis::Flag));
    }

    #[test]
    fn price_lists_parse_or_say_why_not() {
        let t = parse_prices("aws=0.05, azure = 0.08").unwrap();
        assert_eq!(t.get("aws"), Some(&0.05));
        assert_eq!(t.get("azure"), Some(&0.08));
        assert!(parse_prices("aws")
            .unwrap_err()
            .to_string()
            .contains("CLOUD=USD_PER_GIB"));
        assert!(parse_prices("aws=-1").is_err());
        assert!(parse_prices("").unwrap().is_empty());
    }

    #[test]
    fn a_target_is_priced_per_gib() {
        let q = Prices::default().quote("s3://a", "az://c");
        let t = DryTarget::priced("az://c".into(), [GIB as u64 / 2, 0, 0, GIB as u64 / 2], q);
        assert!((t.usd - 0.09).abs() < 1e-9);
        let run = DryRun::of(vec![t.clone(), t]);
        assert_eq!(run.bytes_total, 2 * GIB as u64);
        assert!((run.usd_total - 0.18).abs() < 1e-9);
    }
}
