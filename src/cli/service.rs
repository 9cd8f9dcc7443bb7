//! Whether the service runs on a configuration's store: then the commands that read or change
//! its state go through its admin API; otherwise they open the store themselves.

use mxc_relay::admin::client::AdminClient;
use mxc_relay::config::Config;

pub enum Service {
    Running(AdminClient),
    Stopped,
}

impl Service {
    pub fn find(config: &Config) -> anyhow::Result<Service> {
        Ok(match AdminClient::find(config)? {
            Some(api) => Service::Running(api),
            None => Service::Stopped,
        })
    }
}
