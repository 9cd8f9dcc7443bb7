//! Disk full: the store lives on a small tmpfs (mounted by the test, which needs root, as in CI)
//! that another writer fills while records keep coming. Polling must stop for safety with an
//! error that says so, the cursors must not move, and everything must arrive once space returns.

use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use chrono::Utc;
use mxc_relay::config::Config;
use mxc_relay::pipeline::Pipeline;
use mxc_relay::telemetry::Metrics;
use test_kit::PipelineConfigBuilder;

use crate::support::*;

const MIB: u64 = 1024 * 1024;

/// A tmpfs of `mib` MiB at `dir`, unmounted on drop.
struct SmallDisk {
    dir: PathBuf,
}

impl SmallDisk {
    fn mount(dir: &Path, mib: u64) -> SmallDisk {
        std::fs::create_dir_all(dir).unwrap();
        let status = Command::new("mount")
            .args(["-t", "tmpfs", "-o", &format!("size={mib}m"), "tmpfs"])
            .arg(dir)
            .status()
            .expect("mount runs");
        assert!(
            status.success(),
            "mounting a {mib} MiB tmpfs at {} failed: this test needs root (CI runs as root)",
            dir.display()
        );
        SmallDisk {
            dir: dir.to_path_buf(),
        }
    }

    fn free(&self) -> u64 {
        fs2::available_space(&self.dir).unwrap()
    }

    /// Another program's file, grown until `leave` bytes are free.
    fn fill_leaving(&self, leave: u64) -> PathBuf {
        let path = self.dir.join("filler");
        let mut file = std::fs::File::create(&path).unwrap();
        let block = vec![0u8; 64 * 1024];
        while self.free() > leave + block.len() as u64 {
            file.write_all(&block).unwrap();
        }
        file.sync_all().unwrap();
        path
    }
}

impl SmallDisk {
    /// Another program's file, grown until the disk refuses another byte.
    fn fill(&self) -> PathBuf {
        let path = self.fill_leaving(0);
        let mut file = std::fs::OpenOptions::new()
            .append(true)
            .open(&path)
            .unwrap();
        for size in [4096, 512, 1] {
            while file.write_all(&vec![0u8; size]).is_ok() {}
        }
        let _ = file.sync_all();
        path
    }
}

impl Drop for SmallDisk {
    fn drop(&mut self) {
        let _ = Command::new("umount").arg("-l").arg(&self.dir).status();
    }
}

/// Polling `xmids` every second from ten minutes before `t0`, the store on `disk` with the
/// guard `min_free_mib`, every record to the file `archive`.
fn config(
    sim: &mxc_sim::RunningSim,
    xmids: &[String],
    t0: chrono::DateTime<Utc>,
    disk: &SmallDisk,
    archive: &Path,
    min_free_mib: u64,
) -> Config {
    PipelineConfigBuilder::new(sim.base_url(), xmids)
        .interval(Duration::from_secs(1))
        .look_back(Duration::from_secs(10 * 60))
        // The lag in steady state is settle + at most an interval: keep it small and clear.
        .with(|c| c.pollers.settle = Duration::from_secs(1))
        .start(t0 - chrono::Duration::minutes(10))
        .store(disk.dir.join("store"))
        .with(|c| c.store.min_free_mib = min_free_mib)
        .archive(archive.to_path_buf())
        .build_valid()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_full_disk_pauses_polling_keeps_the_cursors_and_recovers_when_space_returns() {
    let sim = start_sim(quiet_sim()).await;
    let xmids: Vec<String> = sim.xmids()[..4].to_vec();
    let t0 = Utc::now();
    sim.generate(200, &xmids, t0 - chrono::Duration::minutes(5), t0)
        .unwrap();

    let dir = tempfile::tempdir().unwrap();
    let disk = SmallDisk::mount(&dir.path().join("disk"), 32);
    let archive = dir.path().join("archive.jsonl");
    let c = config(&sim, &xmids, t0, &disk, &archive, 4);

    let metrics = Metrics::new();
    let pipeline = Pipeline::start(&c, metrics.clone()).await.unwrap();
    let readyz = format!("http://{}/readyz", pipeline.telemetry_addr.unwrap());
    assert_eq!(
        wait_for_lines(&archive, 200, Duration::from_secs(20)).await,
        200
    );

    // Another program fills the disk to 1 MiB short of full: below the 4 MiB guard.
    let filler = disk.fill_leaving(MIB);
    let polls_before = metrics.polls.with_label_values(&["ok"]).get();
    sim.generate(
        300,
        &xmids,
        Utc::now() - chrono::Duration::seconds(2),
        Utc::now(),
    )
    .unwrap();
    tokio::time::sleep(Duration::from_secs(6)).await;
    let failed = metrics.polls.with_label_values(&["error"]).get();
    assert_eq!(
        metrics.polls.with_label_values(&["ok"]).get(),
        polls_before,
        "no poll completes while the disk is full"
    );
    assert!(
        failed >= 2,
        "polls are refused while the disk is full ({failed})"
    );
    assert_eq!(lines(&archive).len(), 200, "nothing new is admitted");
    let lag = metrics.poll_lag_max.get();
    assert!(
        lag >= 5.0,
        "the cursors stay put, so the lag grows ({lag} s)"
    );
    let answer = reqwest::get(&readyz).await.unwrap();
    assert_eq!(answer.status(), 503);
    let body = answer.text().await.unwrap();
    assert!(
        body.contains("the disk is nearly full (") && body.contains("store.min_free_mib is 4"),
        "readiness says why: {body}"
    );

    std::fs::remove_file(&filler).unwrap();
    let n = wait_for_lines(&archive, 500, Duration::from_secs(30)).await;
    tokio::time::sleep(Duration::from_secs(2)).await;
    let all = lines(&archive);
    let ids = record_ids(&all);
    assert_eq!(
        (n, all.len(), ids.len()),
        (500, 500, 500),
        "every record, once"
    );
    let lag = metrics.poll_lag_max.get();
    assert!(lag < 4.0, "polling caught up ({lag} s)");
    pipeline.shutdown().await.unwrap();
}

/// Without the guard (`min_free_mib = 0`) a write really hits the full disk: the store closes,
/// opens itself again once space returns, and the service goes on without a restart, every
/// record delivered once.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_write_that_hits_a_full_disk_is_survived_in_process_and_every_record_arrives_once() {
    let sim = start_sim(quiet_sim()).await;
    let xmids: Vec<String> = sim.xmids()[..4].to_vec();
    let t0 = Utc::now();
    sim.generate(200, &xmids, t0 - chrono::Duration::minutes(5), t0)
        .unwrap();

    let dir = tempfile::tempdir().unwrap();
    let disk = SmallDisk::mount(&dir.path().join("disk"), 32);
    let archive = dir.path().join("archive.jsonl");
    let c = config(&sim, &xmids, t0, &disk, &archive, 0);

    let metrics = Metrics::new();
    let pipeline = Pipeline::start(&c, metrics.clone()).await.unwrap();
    assert_eq!(
        wait_for_lines(&archive, 200, Duration::from_secs(20)).await,
        200
    );

    // Every byte taken, while records keep coming in small batches: of 16 KiB each, so that
    // they cannot all fit in pages the store's file freed earlier (10 MB in all).
    let filler = disk.fill();
    let failed_before = metrics.polls.with_label_values(&["error"]).get();
    let large = mxc_sim::Shape {
        with_id: true,
        pad_bytes: 16 * 1024,
        ..mxc_sim::Shape::NORMAL
    };
    for _ in 0..6 {
        sim.generate_shaped(
            100,
            &xmids,
            Utc::now() - chrono::Duration::seconds(2),
            Utc::now(),
            large,
        )
        .unwrap();
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
    let deadline = std::time::Instant::now() + Duration::from_secs(20);
    while metrics.polls.with_label_values(&["error"]).get() < failed_before + 2 {
        assert!(
            std::time::Instant::now() < deadline,
            "polls fail while the disk is full"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    assert!(
        lines(&archive).len() < 800,
        "not everything got through a full disk"
    );

    std::fs::remove_file(&filler).unwrap();
    let n = wait_for_lines(&archive, 800, Duration::from_secs(60)).await;
    tokio::time::sleep(Duration::from_secs(3)).await;
    let all = lines(&archive);
    let ids = record_ids(&all);
    assert_eq!(
        (n, all.len(), ids.len()),
        (800, 800, 800),
        "every record, once, without a restart"
    );
    pipeline.shutdown().await.unwrap();
}
