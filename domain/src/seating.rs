//! Seats and layouts.
//!
//! A screen's layout is one string per row, front row first. Rows are lettered A, B, C, ...
//! (after Z come AA, AB, ...). Within a row every seat character is one seat and seats are
//! numbered from 1 left to right; `.` is an aisle or gap and takes no number. Seat characters:
//! `s` standard, `p` premium, `w` wheelchair space, `c` companion seat.

use serde::{Deserialize, Serialize};
use std::fmt;

/// Most rows a screen may have.
pub const MAX_ROWS: usize = 60;
/// Most characters (seats and gaps) in one row.
pub const MAX_ROW_WIDTH: usize = 80;

/// The kind of a seat, which decides its price.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum SeatKind {
    Standard,
    Premium,
    Wheelchair,
    Companion,
}

impl SeatKind {
    /// All kinds, in a stable order.
    pub const ALL: [SeatKind; 4] = [
        SeatKind::Standard,
        SeatKind::Premium,
        SeatKind::Wheelchair,
        SeatKind::Companion,
    ];

    /// The kind a layout character stands for, `None` for a gap or an unknown character.
    pub fn from_layout_char(c: char) -> Option<Self> {
        match c {
            's' => Some(Self::Standard),
            'p' => Some(Self::Premium),
            'w' => Some(Self::Wheelchair),
            'c' => Some(Self::Companion),
            _ => None,
        }
    }

    /// The wire name: `standard`, `premium`, `wheelchair`, `companion`.
    pub fn as_str(&self) -> &'static str {
        match self {
            Self::Standard => "standard",
            Self::Premium => "premium",
            Self::Wheelchair => "wheelchair",
            Self::Companion => "companion",
        }
    }
}

/// A seat label such as `F7`: a row of capital letters and a seat number from 1.
#[derive(Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub struct SeatLabel(String);

/// Why a seat label did not parse.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{0:?} is not a seat label like \"F7\"")]
pub struct BadSeatLabel(pub String);

impl SeatLabel {
    /// Parses `F7`, `AA12`. Lower case is not accepted: labels are printed on tickets as-is.
    pub fn parse(s: &str) -> Result<Self, BadSeatLabel> {
        let letters = s.bytes().take_while(u8::is_ascii_uppercase).count();
        let digits = &s[letters..];
        let ok = (1..=3).contains(&letters)
            && (1..=3).contains(&digits.len())
            && digits.bytes().all(|b| b.is_ascii_digit())
            && !digits.starts_with('0');
        if ok {
            Ok(Self(s.to_owned()))
        } else {
            Err(BadSeatLabel(s.chars().take(16).collect()))
        }
    }

    fn from_parts(row: &str, number: usize) -> Self {
        Self(format!("{row}{number}"))
    }

    /// The label as text.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl TryFrom<String> for SeatLabel {
    type Error = BadSeatLabel;
    fn try_from(s: String) -> Result<Self, Self::Error> {
        Self::parse(&s)
    }
}

impl From<SeatLabel> for String {
    fn from(l: SeatLabel) -> Self {
        l.0
    }
}

impl fmt::Display for SeatLabel {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// One seat of a layout.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Seat {
    pub label: SeatLabel,
    pub kind: SeatKind,
    /// Position in the row string (gaps included), so a seat map can draw aisles.
    pub column: usize,
}

/// One row of a layout.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Row {
    /// `A`, `B`, ...
    pub name: String,
    pub seats: Vec<Seat>,
}

/// A parsed screen layout.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct SeatLayout {
    pub rows: Vec<Row>,
}

/// Why a layout was refused. `row` counts from 0 (the front row).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum LayoutError {
    #[error("a layout needs at least one row")]
    NoRows,
    #[error("a layout may have at most {MAX_ROWS} rows")]
    TooManyRows,
    #[error("row {row} is longer than {MAX_ROW_WIDTH} characters")]
    RowTooWide { row: usize },
    #[error("row {row} has no seats")]
    EmptyRow { row: usize },
    #[error("row {row} has {found:?}; use s, p, w, c for seats and . for gaps")]
    UnknownCharacter { row: usize, found: char },
}

impl LayoutError {
    /// The row the error is about, if any.
    pub fn row(&self) -> Option<usize> {
        match self {
            Self::NoRows | Self::TooManyRows => None,
            Self::RowTooWide { row }
            | Self::EmptyRow { row }
            | Self::UnknownCharacter { row, .. } => Some(*row),
        }
    }
}

/// The name of the row at `index` from the front: 0 → A, 25 → Z, 26 → AA.
pub fn row_name(index: usize) -> String {
    let mut n = index + 1;
    let mut name = Vec::new();
    while n > 0 {
        let rem = (n - 1) % 26;
        name.push(b'A' + rem as u8);
        n = (n - 1) / 26;
    }
    name.reverse();
    String::from_utf8(name).expect("row names are ASCII letters")
}

impl SeatLayout {
    /// Parses layout strings, front row first.
    pub fn parse<S: AsRef<str>>(rows: &[S]) -> Result<Self, LayoutError> {
        if rows.is_empty() {
            return Err(LayoutError::NoRows);
        }
        if rows.len() > MAX_ROWS {
            return Err(LayoutError::TooManyRows);
        }
        let rows = rows
            .iter()
            .enumerate()
            .map(|(i, spec)| parse_row(i, spec.as_ref()))
            .collect::<Result<_, _>>()?;
        Ok(Self { rows })
    }

    /// Every seat, front row first, left to right.
    pub fn seats(&self) -> impl Iterator<Item = &Seat> {
        self.rows.iter().flat_map(|r| r.seats.iter())
    }

    /// How many seats the layout has.
    pub fn capacity(&self) -> usize {
        self.rows.iter().map(|r| r.seats.len()).sum()
    }

    /// The seat kinds present, each once.
    pub fn kinds(&self) -> Vec<SeatKind> {
        SeatKind::ALL
            .into_iter()
            .filter(|k| self.seats().any(|s| s.kind == *k))
            .collect()
    }
}

fn parse_row(index: usize, spec: &str) -> Result<Row, LayoutError> {
    if spec.chars().count() > MAX_ROW_WIDTH {
        return Err(LayoutError::RowTooWide { row: index });
    }
    let name = row_name(index);
    let mut seats = Vec::new();
    for (column, c) in spec.chars().enumerate() {
        if c == '.' {
            continue;
        }
        let kind = SeatKind::from_layout_char(c).ok_or(LayoutError::UnknownCharacter {
            row: index,
            found: c,
        })?;
        let label = SeatLabel::from_parts(&name, seats.len() + 1);
        seats.push(Seat {
            label,
            kind,
            column,
        });
    }
    if seats.is_empty() {
        return Err(LayoutError::EmptyRow { row: index });
    }
    Ok(Row { name, seats })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_api_example_layout_numbers_seats_skipping_gaps() {
        let layout =
            SeatLayout::parse(&["ss.ssss.ss", "ss.ssss.ss", "pp.pppp.pp", "ww.cccc.ww"]).unwrap();
        assert_eq!(layout.capacity(), 32);
        let a: Vec<_> = layout.rows[0]
            .seats
            .iter()
            .map(|s| s.label.as_str())
            .collect();
        assert_eq!(a, ["A1", "A2", "A3", "A4", "A5", "A6", "A7", "A8"]);
        assert_eq!(layout.rows[0].seats[2].column, 3, "A3 sits after the aisle");
        assert_eq!(layout.rows[3].name, "D");
        assert_eq!(layout.rows[3].seats[0].kind, SeatKind::Wheelchair);
        assert_eq!(layout.rows[3].seats[2].kind, SeatKind::Companion);
        assert_eq!(
            layout.kinds(),
            [
                SeatKind::Standard,
                SeatKind::Premium,
                SeatKind::Wheelchair,
                SeatKind::Companion
            ]
        );
    }

    #[test]
    fn rows_past_z_are_lettered_like_spreadsheet_columns() {
        assert_eq!(row_name(0), "A");
        assert_eq!(row_name(25), "Z");
        assert_eq!(row_name(26), "AA");
        assert_eq!(row_name(27), "AB");
        assert_eq!(row_name(52), "BA");
    }

    #[test]
    fn bad_layouts_say_which_row_is_wrong() {
        let none: [&str; 0] = [];
        assert_eq!(SeatLayout::parse(&none), Err(LayoutError::NoRows));
        assert_eq!(
            SeatLayout::parse(&["ss", "s.x"]),
            Err(LayoutError::UnknownCharacter { row: 1, found: 'x' })
        );
        assert_eq!(
            SeatLayout::parse(&["ss", "..."]),
            Err(LayoutError::EmptyRow { row: 1 })
        );
        let wide = "s".repeat(MAX_ROW_WIDTH + 1);
        assert_eq!(
            SeatLayout::parse(&[wide]),
            Err(LayoutError::RowTooWide { row: 0 })
        );
        let many = vec!["s"; MAX_ROWS + 1];
        assert_eq!(SeatLayout::parse(&many), Err(LayoutError::TooManyRows));
    }

    #[test]
    fn seat_labels_are_row_letters_then_a_number() {
        assert!(SeatLabel::parse("F7").is_ok());
        assert!(SeatLabel::parse("AA12").is_ok());
        for bad in ["f7", "F", "7", "F07", "F7a", "", "F1234", "ÄÖ1"] {
            assert!(SeatLabel::parse(bad).is_err(), "{bad} should be refused");
        }
    }
}
