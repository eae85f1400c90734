//! Fixed budget windows, in UTC: a minute, hour, day, week (from Monday)
//! or calendar month.

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use crate::config::BudgetPeriod;

/// One window of a period.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Window {
    /// Counts windows of the period since the Unix epoch (months: since
    /// year 0).
    pub id: u64,
    /// Its end, in seconds since the Unix epoch.
    pub end: u64,
}

/// 1970-01-01 was a Thursday: weeks from Monday start three days later.
const WEEK_SHIFT_DAYS: u64 = 3;

impl Window {
    pub fn of(period: BudgetPeriod, now: SystemTime) -> Self {
        let secs = now.duration_since(UNIX_EPOCH).map_or(0, |d| d.as_secs());
        let fixed = |len: u64| {
            let id = secs / len;
            Self {
                id,
                end: (id + 1) * len,
            }
        };
        match period {
            BudgetPeriod::Minute => fixed(60),
            BudgetPeriod::Hour => fixed(3600),
            BudgetPeriod::Day => fixed(86_400),
            BudgetPeriod::Week => {
                let id = (secs / 86_400 + WEEK_SHIFT_DAYS) / 7;
                Self {
                    id,
                    end: ((id + 1) * 7 - WEEK_SHIFT_DAYS) * 86_400,
                }
            }
            BudgetPeriod::Month => {
                let utc = jiff::tz::TimeZone::UTC;
                let now = jiff::Timestamp::from_second(secs as i64)
                    .unwrap_or(jiff::Timestamp::UNIX_EPOCH);
                let date = utc.to_datetime(now).date();
                let next = date
                    .first_of_month()
                    .checked_add(jiff::Span::new().months(1))
                    .unwrap_or(date);
                let end = utc
                    .to_timestamp(next.to_datetime(jiff::civil::Time::midnight()))
                    .map_or(secs + 86_400, |t| t.as_second() as u64);
                Self {
                    id: date.year() as u64 * 12 + date.month() as u64 - 1,
                    end,
                }
            }
        }
    }

    /// Whole seconds until it renews, at least one.
    pub fn seconds_left(&self, now: SystemTime) -> u64 {
        let now = now.duration_since(UNIX_EPOCH).map_or(0, |d| d.as_secs());
        self.end.saturating_sub(now).max(1)
    }

    /// How long its counter is kept: to its end, and a second more for
    /// the settlements of answers that were under way.
    pub fn ttl(&self, now: SystemTime) -> Duration {
        Duration::from_secs(self.seconds_left(now) + 1)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn at(text: &str) -> SystemTime {
        let ts: jiff::Timestamp = text.parse().unwrap();
        UNIX_EPOCH + Duration::from_secs(ts.as_second() as u64)
    }

    fn end(w: Window) -> String {
        jiff::Timestamp::from_second(w.end as i64)
            .unwrap()
            .to_string()
    }

    #[test]
    fn windows_are_fixed_in_utc_and_end_where_the_calendar_does() {
        let now = at("2026-12-06T08:30:15Z"); // a Sunday
        assert_eq!(
            end(Window::of(BudgetPeriod::Minute, now)),
            "2026-12-06T08:31:00Z"
        );
        assert_eq!(
            end(Window::of(BudgetPeriod::Hour, now)),
            "2026-12-06T09:00:00Z"
        );
        assert_eq!(
            end(Window::of(BudgetPeriod::Day, now)),
            "2026-12-07T00:00:00Z"
        );
        assert_eq!(
            end(Window::of(BudgetPeriod::Week, now)),
            "2026-12-07T00:00:00Z"
        );
        assert_eq!(
            end(Window::of(BudgetPeriod::Month, now)),
            "2027-01-01T00:00:00Z"
        );
        // Monday starts a new week; February ends on its own last day.
        let monday = Window::of(BudgetPeriod::Week, at("2026-12-07T00:00:00Z"));
        assert_eq!(end(monday), "2026-12-14T00:00:00Z");
        assert_ne!(monday.id, Window::of(BudgetPeriod::Week, now).id);
        let feb = Window::of(BudgetPeriod::Month, at("2028-02-29T23:59:59Z"));
        assert_eq!(end(feb), "2028-03-01T00:00:00Z");
        assert_eq!(Window::of(BudgetPeriod::Minute, now).seconds_left(now), 45);
    }
}
