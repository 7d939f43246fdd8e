//! Where buckets start and end: fixed steps aligned to the epoch, or calendar steps (days,
//! weeks, months, years) aligned to local midnights in a time zone, DST included.

use jiff::civil::Date;
use jiff::tz::TimeZone;
use jiff::{Timestamp, ToSpan};
use serde_json::Value as Json;

use crate::error::{Error, Result};
use crate::units::{split_unit, unit_seconds};
use crate::value::Time;

/// A bucket length.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Step {
    /// Seconds (`S`, `M`, `H` units, or a bare number), aligned to the epoch.
    Fixed(f64),
    /// `count` calendar units, aligned to local midnight (weeks start on Monday).
    Calendar { unit: CalendarUnit, count: u32 },
}

/// Calendar step units.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CalendarUnit {
    Day,
    Week,
    Month,
    Year,
}

impl Step {
    /// `"15M"`, `"1d"`, `3600`. Units: `S` second, `M` minute, `H` hour (fixed, aligned to
    /// the epoch), `d` day, `w` week, `m` month, `y` year (calendar, in the query's zone).
    pub fn parse(v: &Json) -> Result<Step> {
        let bad = || {
            Error::query(
                "step must be a positive number of seconds or a count and a unit, like \"15M\" \
                 (units: S M H d w m y)",
            )
        };
        let step = match v {
            Json::Number(n) => Step::Fixed(n.as_f64().ok_or_else(bad)?),
            Json::String(s) => {
                let (count, unit) = split_unit(s).ok_or_else(bad)?;
                let calendar = |unit| -> Result<Step> {
                    let count: u32 = count.parse().map_err(|_| bad())?;
                    if count == 0 {
                        return Err(bad());
                    }
                    Ok(Step::Calendar { unit, count })
                };
                match unit {
                    'S' | 'M' | 'H' => {
                        let count: f64 = count.parse().map_err(|_| bad())?;
                        Step::Fixed(count * unit_seconds(unit).ok_or_else(bad)?)
                    }
                    'd' => calendar(CalendarUnit::Day)?,
                    'w' => calendar(CalendarUnit::Week)?,
                    'm' => calendar(CalendarUnit::Month)?,
                    'y' => calendar(CalendarUnit::Year)?,
                    _ => return Err(bad()),
                }
            }
            _ => return Err(bad()),
        };
        match step {
            Step::Fixed(s) if !(s.is_finite() && s > 0.0) => Err(bad()),
            step => Ok(step),
        }
    }
}

/// A time zone by IANA name (`"Europe/Warsaw"`), or UTC.
pub fn zone(name: Option<&str>) -> Result<TimeZone> {
    match name {
        None | Some("UTC") => Ok(TimeZone::UTC),
        Some(name) => TimeZone::get(name)
            .map_err(|e| Error::query(format!("unknown time zone {name:?}: {e}"))),
    }
}

/// The edges of the buckets covering `[since, until)`: the first bucket holds `since`, the
/// last ends at or after `until`. More than `max` buckets is a `limit_exceeded` error.
pub fn edges(step: Step, tz: &TimeZone, since: Time, until: Time, max: usize) -> Result<Vec<Time>> {
    let too_many = || {
        Error::LimitExceeded(format!(
            "more than {max} buckets: use a larger step or a shorter range"
        ))
    };
    if since.partial_cmp(&until) != Some(std::cmp::Ordering::Less) {
        return Err(Error::query("since must be before until"));
    }
    match step {
        Step::Fixed(step) => {
            let first = (since / step).floor() * step;
            let count = ((until - first) / step).ceil().max(1.0);
            if count > max as f64 {
                return Err(too_many());
            }
            Ok((0..=count as usize)
                .map(|i| first + i as f64 * step)
                .collect())
        }
        Step::Calendar { unit, count } => {
            let mut index = unit_index(unit, local_date(since, tz)?).div_euclid(i64::from(count))
                * i64::from(count);
            let mut out = Vec::new();
            loop {
                let edge = start_of(unit, index, tz)?;
                out.push(edge);
                if edge >= until {
                    break;
                }
                if out.len() > max {
                    return Err(too_many());
                }
                index += i64::from(count);
            }
            Ok(out)
        }
    }
}

/// The local hour (0–23) of `t` in `tz`.
pub fn local_hour(t: Time, tz: &TimeZone) -> Result<u8> {
    Ok(timestamp(t)?.to_zoned(tz.clone()).hour() as u8)
}

/// The local ISO weekday of `t` in `tz`: 1 = Monday … 7 = Sunday.
pub fn local_weekday(t: Time, tz: &TimeZone) -> Result<u8> {
    Ok(timestamp(t)?
        .to_zoned(tz.clone())
        .weekday()
        .to_monday_one_offset() as u8)
}

fn timestamp(t: Time) -> Result<Timestamp> {
    let secs = t.floor();
    let nanos = ((t - secs) * 1e9) as i32;
    Timestamp::new(secs as i64, nanos.clamp(0, 999_999_999))
        .map_err(|e| Error::query(format!("time {t} is out of range: {e}")))
}

fn local_date(t: Time, tz: &TimeZone) -> Result<Date> {
    Ok(timestamp(t)?.to_zoned(tz.clone()).date())
}

const EPOCH: Date = Date::constant(1970, 1, 1);
/// The first Monday after the epoch: weeks count from here.
const EPOCH_MONDAY: Date = Date::constant(1970, 1, 5);

/// Which day, week, month or year (counted from 1970) `date` lies in.
fn unit_index(unit: CalendarUnit, date: Date) -> i64 {
    let days = |d: Date| -> i64 {
        // Whole days from the epoch; Date arithmetic cannot fail inside jiff's range.
        i64::from(
            d.since((jiff::Unit::Day, EPOCH))
                .map(|s| s.get_days())
                .unwrap_or(0),
        )
    };
    match unit {
        CalendarUnit::Day => days(date),
        CalendarUnit::Week => (days(date) - days(EPOCH_MONDAY)).div_euclid(7),
        CalendarUnit::Month => (i64::from(date.year()) - 1970) * 12 + i64::from(date.month()) - 1,
        CalendarUnit::Year => i64::from(date.year()) - 1970,
    }
}

/// The instant the `index`th unit (counted from 1970) starts in `tz`.
fn start_of(unit: CalendarUnit, index: i64, tz: &TimeZone) -> Result<Time> {
    let out_of_range = || Error::query("a bucket edge falls outside years -9999..9999");
    let date = match unit {
        CalendarUnit::Day => EPOCH.checked_add(index.days()),
        CalendarUnit::Week => EPOCH_MONDAY.checked_add((index * 7).days()),
        CalendarUnit::Month => {
            let year = i16::try_from(1970 + index.div_euclid(12)).map_err(|_| out_of_range())?;
            Date::new(year, (index.rem_euclid(12) + 1) as i8, 1)
        }
        CalendarUnit::Year => {
            let year = i16::try_from(1970 + index).map_err(|_| out_of_range())?;
            Date::new(year, 1, 1)
        }
    }
    .map_err(|_| out_of_range())?;
    let start = date
        .to_zoned(tz.clone())
        .and_then(|z| z.start_of_day())
        .map_err(|_| out_of_range())?
        .timestamp();
    Ok(start.as_second() as f64 + f64::from(start.subsec_nanosecond()) * 1e-9)
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn utc(s: &str) -> Time {
        let ts: Timestamp = s.parse().expect("a valid timestamp");
        ts.as_second() as f64
    }

    #[test]
    fn steps_parse_in_every_unit() {
        assert_eq!(Step::parse(&json!("5M")).ok(), Some(Step::Fixed(300.0)));
        assert_eq!(Step::parse(&json!(90)).ok(), Some(Step::Fixed(90.0)));
        assert_eq!(
            Step::parse(&json!("2w")).ok(),
            Some(Step::Calendar {
                unit: CalendarUnit::Week,
                count: 2
            })
        );
        for bad in [
            json!(""),
            json!("M"),
            json!("0d"),
            json!("1.5d"),
            json!("-1H"),
            json!(0),
            json!("5x"),
        ] {
            assert!(Step::parse(&bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn days_follow_local_midnight_across_dst() -> Result<()> {
        // Warsaw moved its clocks forward on 2026-03-29: that day has 23 hours.
        let tz = zone(Some("Europe/Warsaw"))?;
        let step = Step::Calendar {
            unit: CalendarUnit::Day,
            count: 1,
        };
        let e = edges(
            step,
            &tz,
            utc("2026-03-28T12:00:00Z"),
            utc("2026-03-30T12:00:00Z"),
            10,
        )?;
        assert_eq!(
            e,
            vec![
                utc("2026-03-27T23:00:00Z"),
                utc("2026-03-28T23:00:00Z"),
                utc("2026-03-29T22:00:00Z"),
                utc("2026-03-30T22:00:00Z"),
            ]
        );
        assert_eq!(e[2] - e[1], 23.0 * 3600.0);
        Ok(())
    }

    #[test]
    fn weeks_start_on_monday_and_months_on_the_first() -> Result<()> {
        let week = Step::Calendar {
            unit: CalendarUnit::Week,
            count: 1,
        };
        // 2026-11-27 is a Friday.
        let e = edges(
            week,
            &TimeZone::UTC,
            utc("2026-11-27T10:00:00Z"),
            utc("2026-11-28T00:00:00Z"),
            10,
        )?;
        assert_eq!(
            e,
            vec![utc("2026-11-23T00:00:00Z"), utc("2026-11-30T00:00:00Z")]
        );
        let month = Step::Calendar {
            unit: CalendarUnit::Month,
            count: 1,
        };
        let e = edges(
            month,
            &TimeZone::UTC,
            utc("2026-01-31T10:00:00Z"),
            utc("2026-03-01T00:00:00Z"),
            10,
        )?;
        assert_eq!(
            e,
            vec![
                utc("2026-01-01T00:00:00Z"),
                utc("2026-02-01T00:00:00Z"),
                utc("2026-03-01T00:00:00Z")
            ]
        );
        Ok(())
    }

    #[test]
    fn fixed_steps_align_to_the_epoch_and_respect_the_cap() {
        assert_eq!(
            edges(Step::Fixed(60.0), &TimeZone::UTC, 90.0, 150.0, 10).ok(),
            Some(vec![60.0, 120.0, 180.0])
        );
        assert!(matches!(
            edges(Step::Fixed(1.0), &TimeZone::UTC, 0.0, 100.0, 10),
            Err(Error::LimitExceeded(_))
        ));
    }

    #[test]
    fn local_hours_and_weekdays() -> Result<()> {
        let tz = zone(Some("America/New_York"))?;
        let t = utc("2026-11-30T03:30:00Z"); // Sunday 22:30 in New York
        assert_eq!(local_hour(t, &tz)?, 22);
        assert_eq!(local_weekday(t, &tz)?, 7);
        assert_eq!(local_weekday(t, &TimeZone::UTC)?, 1);
        Ok(())
    }
}
