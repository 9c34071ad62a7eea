//! `duebell import`: loan books and payments files, CSV and JSONL, applied
//! per file in one transaction.

use std::time::{Duration, Instant};

use duebell::domain::{LoanId, LoanStatus};

use crate::support::{duebell, loan_line, open_store, run, write_book, write_config, LOAN_HEADER};

fn import(cfg: &std::path::Path, files: &[&std::path::Path]) -> (i32, String, String) {
    let mut args = vec![
        "import".to_owned(),
        "--config".to_owned(),
        cfg.display().to_string(),
    ];
    args.extend(files.iter().map(|f| f.display().to_string()));
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    run(&mut duebell(&args))
}

#[test]
fn three_bad_rows_among_a_thousand_are_named_and_the_rest_imported() {
    let dir = tempfile::tempdir().unwrap();
    let cfg = write_config(dir.path(), "");
    let book = dir.path().join("book.csv");
    write_book(
        &book,
        1000,
        &[(10, "phone"), (500, "timezone"), (999, "amount_due")],
    );
    let (code, stdout, stderr) = import(&cfg, &[&book]);
    assert_eq!(code, 1, "{stderr}");
    assert!(
        stdout.contains("imported 997, updated 0, unchanged 0, rejected 3"),
        "{stdout}"
    );
    let shown = book.display().to_string();
    // Data rows start on line 2, so row i is on line i + 2.
    let errors: Vec<&str> = stderr.lines().collect();
    assert_eq!(errors.len(), 3, "{stderr}");
    assert!(
        errors[0].starts_with(&format!("{shown}:12: phone: ")),
        "{stderr}"
    );
    assert!(
        errors[0].contains("not a phone number") || errors[0].contains("not a valid number"),
        "{stderr}"
    );
    assert!(
        errors[1].starts_with(&format!(
            "{shown}:502: timezone: `Asia/Atlantis` is not an IANA time zone"
        )),
        "{stderr}"
    );
    assert!(
        errors[2].starts_with(&format!("{shown}:1001: amount_due: ")),
        "{stderr}"
    );
}

#[test]
fn reimporting_a_100k_row_book_changes_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let cfg = write_config(dir.path(), "");
    let book = dir.path().join("big.csv");
    write_book(&book, 100_000, &[]);
    let (code, stdout, stderr) = import(&cfg, &[&book]);
    assert_eq!(code, 0, "{stderr}");
    assert!(
        stdout.contains("imported 100000, updated 0, unchanged 0, rejected 0"),
        "{stdout}"
    );
    let (code, stdout, stderr) = import(&cfg, &[&book]);
    assert_eq!(code, 0, "{stderr}");
    assert!(
        stdout.contains("imported 0, updated 0, unchanged 100000, rejected 0"),
        "{stdout}"
    );
}

#[tokio::test]
async fn killing_an_import_midway_leaves_the_store_as_before() {
    let dir = tempfile::tempdir().unwrap();
    let cfg = write_config(dir.path(), "");
    let small = dir.path().join("small.csv");
    write_book(&small, 100, &[]);
    assert_eq!(import(&cfg, &[&small]).0, 0);
    let before = open_store(dir.path()).await.counts().await.unwrap();

    // A book that changes the first 100 loans and adds many more.
    let big = dir.path().join("big.csv");
    {
        use std::io::Write;
        let mut f = std::io::BufWriter::new(std::fs::File::create(&big).unwrap());
        writeln!(f, "{LOAN_HEADER}").unwrap();
        for i in 0..150_000 {
            writeln!(
                f,
                "{}",
                crate::support::loan_line(i).replace(".50,CNY", ".75,CNY")
            )
            .unwrap();
        }
    }
    let mut child = duebell(&[
        "import",
        "--config",
        cfg.to_str().unwrap(),
        big.to_str().unwrap(),
    ])
    .stdout(std::process::Stdio::null())
    .stderr(std::process::Stdio::null())
    .spawn()
    .unwrap();
    // Let it get well into the file (a debug build takes tens of seconds
    // for 150k rows), then kill it without warning.
    let started = Instant::now();
    while started.elapsed() < Duration::from_millis(1500) {
        assert!(
            child.try_wait().unwrap().is_none(),
            "the import finished before it could be killed"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
    child.kill().unwrap();
    let status = child.wait().unwrap();
    assert!(!status.success(), "the import was not killed: {status}");

    let store = open_store(dir.path()).await;
    assert_eq!(store.counts().await.unwrap(), before);
    let first = store
        .loan(&LoanId::parse("L0").unwrap())
        .await
        .unwrap()
        .unwrap();
    assert_eq!(
        first.amount_due.amount.to_string(),
        "1000.50",
        "a row of the killed file was applied"
    );
    assert!(store
        .loan(&LoanId::parse("L149999").unwrap())
        .await
        .unwrap()
        .is_none());
}

#[tokio::test]
async fn payments_mark_covered_loans_paid_and_are_idempotent() {
    let dir = tempfile::tempdir().unwrap();
    let cfg = write_config(dir.path(), "");
    let book = dir.path().join("book.csv");
    write_book(&book, 4, &[]);
    assert_eq!(import(&cfg, &[&book]).0, 0);
    let pay = dir.path().join("payments.csv");
    // L0 is due 1000.50: paid in two parts. L1 (1001.50) gets a partial payment.
    std::fs::write(
        &pay,
        "payment_id,loan_id,amount,paid_at\n\
         P1,L0,500.25,2026-12-01T10:00:00+08:00\n\
         P2,L0,500.25,2026-12-02T10:00:00+08:00\n\
         P3,L1,100,2026-12-01T10:00:00Z\n\
         P4,L404,10,2026-12-01T10:00:00Z\n\
         P5,L2,12.00,yesterday\n",
    )
    .unwrap();
    let (code, stdout, stderr) = import(&cfg, &[&pay]);
    assert_eq!(code, 1);
    assert!(
        stdout.contains("imported 3, updated 0, unchanged 0, rejected 2"),
        "{stdout}"
    );
    let shown = pay.display().to_string();
    assert!(
        stderr.contains(&format!(
            "{shown}:5: loan_id: no loan `L404` in the store; import the loan book first"
        )),
        "{stderr}"
    );
    assert!(
        stderr.contains(&format!(
            "{shown}:6: paid_at: `yesterday` is not an RFC 3339 instant"
        )),
        "{stderr}"
    );

    let store = open_store(dir.path()).await;
    let l0 = store
        .loan(&LoanId::parse("L0").unwrap())
        .await
        .unwrap()
        .unwrap();
    assert_eq!(l0.status, LoanStatus::Paid);
    assert_eq!(l0.paid_total.to_string(), "1000.50");
    let l1 = store
        .loan(&LoanId::parse("L1").unwrap())
        .await
        .unwrap()
        .unwrap();
    assert_eq!(l1.status, LoanStatus::Active);

    // Re-importing the payments and the book changes nothing: the book's
    // implicit `active` does not undo a loan paid by its payments.
    let (_, stdout, _) = import(&cfg, &[&pay, &book]);
    assert!(
        stdout.contains("imported 0, updated 0, unchanged 3, rejected 2"),
        "{stdout}"
    );
    assert!(
        stdout.contains("imported 0, updated 0, unchanged 4, rejected 0"),
        "{stdout}"
    );
    let l0 = store
        .loan(&LoanId::parse("L0").unwrap())
        .await
        .unwrap()
        .unwrap();
    assert_eq!(l0.status, LoanStatus::Paid);
}

#[tokio::test]
async fn jsonl_and_csv_describe_the_same_book() {
    let dir = tempfile::tempdir().unwrap();
    let cfg = write_config(dir.path(), "");
    let csv = dir.path().join("book.csv");
    std::fs::write(
        &csv,
        "name,loan_id,borrower_id,phone,email,locale,timezone,due_date,amount_due,currency,status,branch\n\
         Amelia Hall,A1,BA,+12125550123,amelia@example.com,en-US,America/New_York,2026-12-03,450.00,USD,active,NYC\n",
    )
    .unwrap();
    assert_eq!(import(&cfg, &[&csv]).0, 0);
    let jsonl = dir.path().join("book.jsonl");
    std::fs::write(
        &jsonl,
        "{\"loan_id\":\"A1\",\"borrower_id\":\"BA\",\"name\":\"Amelia Hall\",\"phone\":\"+1 212 555 0123\",\"email\":\"amelia@EXAMPLE.com\",\"locale\":\"en-US\",\"timezone\":\"America/New_York\",\"due_date\":\"2026-12-03\",\"amount_due\":450,\"currency\":\"usd\",\"status\":\"active\"}\n",
    )
    .unwrap();
    let (code, stdout, stderr) = import(&cfg, &[&jsonl]);
    assert_eq!(code, 0, "{stderr}");
    assert!(
        stdout.contains("imported 0, updated 0, unchanged 1, rejected 0"),
        "{stdout}"
    );
}

#[tokio::test]
async fn a_file_missing_a_column_is_refused_whole() {
    let dir = tempfile::tempdir().unwrap();
    let cfg = write_config(dir.path(), "");
    let book = dir.path().join("book.csv");
    std::fs::write(&book, "loan_id,borrower_id,name,phone,email,locale,timezone,amount_due,currency\nL1,B1,N,+8613812345678,,,,1.00,CNY\n").unwrap();
    let (code, stdout, stderr) = import(&cfg, &[&book]);
    assert_eq!(code, 1);
    assert!(stdout.contains("not imported"), "{stdout}");
    assert!(
        stderr.contains(&format!(
            "{}:1: header: missing column due_date",
            book.display()
        )),
        "{stderr}"
    );
    assert_eq!(
        open_store(dir.path()).await.counts().await.unwrap().loans,
        0
    );
}

#[test]
fn repeated_ids_and_disagreeing_borrower_rows_are_refused() {
    let dir = tempfile::tempdir().unwrap();
    let cfg = write_config(dir.path(), "");
    let book = dir.path().join("book.csv");
    std::fs::write(
        &book,
        format!(
            "{LOAN_HEADER}\n\
             L1,B1,Li Wei,+8613812345678,,zh-CN,,2026-12-01,10.00,CNY\n\
             L2,B1,Li Wei,+8613912345678,,zh-CN,,2026-12-05,10.00,CNY\n\
             L1,B1,Li Wei,+8613812345678,,zh-CN,,2026-12-09,10.00,CNY\n"
        ),
    )
    .unwrap();
    let (code, stdout, stderr) = import(&cfg, &[&book]);
    assert_eq!(code, 1);
    assert!(
        stdout.contains("imported 1, updated 0, unchanged 0, rejected 2"),
        "{stdout}"
    );
    let shown = book.display().to_string();
    assert!(
        stderr.contains(&format!(
            "{shown}:3: phone: differs from borrower `B1` on line 2"
        )),
        "{stderr}"
    );
    assert!(
        stderr.contains(&format!(
            "{shown}:4: loan_id: `L1` appears again (first on line 2)"
        )),
        "{stderr}"
    );
}

#[test]
fn a_quote_left_open_names_every_line_it_swallowed() {
    let dir = tempfile::tempdir().unwrap();
    let cfg = write_config(dir.path(), "");
    let book = dir.path().join("book.csv");
    let row = |i: usize, name: &str| {
        format!("L{i},B{i},{name},+86138000000{i:02},,zh-CN,Asia/Shanghai,2026-12-10,10.00,CNY\n")
    };
    // Line 3 opens a quote that line 4 closes mid-row: csv reads lines 3
    // and 4 as one record, and line 4's loan would vanish unreported.
    let text = format!(
        "{LOAN_HEADER}\n{}{}{}{}",
        row(1, "Ann"),
        row(2, "\"Bad Name"),
        row(3, "Cy\" Jones"),
        row(4, "Di")
    );
    std::fs::write(&book, text).unwrap();
    let (code, stdout, stderr) = import(&cfg, &[&book]);
    assert_eq!(code, 1, "{stderr}");
    assert!(stdout.contains("imported 2,"), "{stdout}");
    assert!(stdout.contains("rejected 2"), "{stdout}");
    let shown = book.display().to_string();
    assert!(
        stderr.contains(&format!(
            "{shown}:3: row: a quote opened on this line is not closed"
        )),
        "{stderr}"
    );
    assert!(
        stderr.contains(&format!("{shown}:4: row: was read as part of line 3")),
        "{stderr}"
    );
}

/// The same refusals when the rows are far apart in a large file (the
/// importer keeps what it has seen in the store's transaction, not in
/// memory), through a byte-order mark, and in JSONL whose first lines are
/// not objects.
#[test]
fn repeats_far_apart_in_a_large_file_are_refused_with_their_first_line() {
    let dir = tempfile::tempdir().unwrap();
    let cfg = write_config(dir.path(), "");
    let book = dir.path().join("book.csv");
    write_book(&book, 2500, &[]);
    let mut text = std::fs::read_to_string(&book).unwrap();
    // L7 is on line 9; B3 (rows 6 and 7) first on line 8. A row refused
    // for a bad field does not claim its key: L2600's later row is taken.
    text.push_str(&loan_line(7).replace("2026-12-08", "2026-12-20"));
    text.push('\n');
    text.push_str(
        &loan_line(2600)
            .replace("B1300", "B3")
            .replace("Name 1300", "Name Other")
            .replace("+8613800001300", "+8613800000003")
            .replace("u1300@", "u3@"),
    );
    text.push('\n');
    text.push_str(&loan_line(2601).replace(".50,CNY", ".50.1,CNY"));
    text.push('\n');
    text.push_str(&loan_line(2601));
    text.push('\n');
    std::fs::write(&book, format!("\u{feff}{text}")).unwrap();
    let (code, stdout, stderr) = import(&cfg, &[&book]);
    assert_eq!(code, 1, "{stdout}{stderr}");
    assert!(
        stdout.contains("imported 2501, updated 0, unchanged 0, rejected 3"),
        "{stdout}"
    );
    let shown = book.display().to_string();
    for want in [
        format!("{shown}:2502: loan_id: `L7` appears again (first on line 9)"),
        format!("{shown}:2503: name: differs from borrower `B3` on line 8"),
        format!("{shown}:2504: amount_due:"),
    ] {
        assert!(stderr.contains(&want), "{want}\n{stderr}");
    }

    // JSONL: the kind comes from the first object, after two lines that
    // are not objects (each reported); a repeat far down is refused.
    let jsonl = dir.path().join("book.jsonl");
    let mut out = String::from("not json\n[1]\n");
    for i in 0..1500 {
        let f: Vec<String> = loan_line(i).split(',').map(str::to_owned).collect();
        out.push_str(&format!(
            "{{\"loan_id\":\"J{i}\",\"borrower_id\":\"J{}\",\"name\":\"{}\",\"phone\":\"{}\",\"email\":\"{}\",\"locale\":\"{}\",\"timezone\":\"{}\",\"due_date\":\"{}\",\"amount_due\":\"{}\",\"currency\":\"{}\"}}\n",
            i / 2, f[2], f[3].replace("+86138", "+86139"), f[4].replace('u', "j"), f[5], f[6], f[7], f[8], f[9]
        ));
    }
    let first = out.lines().nth(2).unwrap().to_owned();
    out.push_str(&first);
    out.push('\n');
    std::fs::write(&jsonl, out).unwrap();
    let (code, stdout, stderr) = import(&cfg, &[&jsonl]);
    assert_eq!(code, 1, "{stdout}{stderr}");
    assert!(
        stdout.contains("imported 1500, updated 0, unchanged 0, rejected 3"),
        "{stdout}"
    );
    let shown = jsonl.display().to_string();
    for want in [
        format!("{shown}:1: row: is not a JSON object"),
        format!("{shown}:2: row:"),
        format!("{shown}:1503: loan_id: `J0` appears again (first on line 3)"),
    ] {
        assert!(stderr.contains(&want), "{want}\n{stderr}");
    }
}
