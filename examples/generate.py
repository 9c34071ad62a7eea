#!/usr/bin/env python3
"""Regenerates the sample loan book and payments file in this folder.

Deterministic (fixed seed): the committed files are what this prints. Due
dates spread around early December 2026 so that `duebell plan --at
2026-12-01T09:00:00+08:00` shows every stage of the ladder; phone numbers
are in ranges reserved for fiction or are well-formed test numbers, emails
are on example.com/.org/.net.
"""
import csv
import datetime as dt
import random

rng = random.Random(20261201)
SURNAMES = "王李张刘陈杨黄赵吴周徐孙马朱胡郭何高林罗".replace("", " ").split()
GIVEN = "伟芳娜敏静丽强磊军洋勇艳杰娟涛明超秀霞平刚桂英华玉兰".replace("", " ").split()
FIRST = ["James", "Mary", "Robert", "Patricia", "John", "Jennifer", "Michael", "Linda", "David",
         "Elizabeth", "William", "Barbara", "Richard", "Susan", "Joseph", "Jessica", "Thomas",
         "Sarah", "Aisha", "Wei", "Priya", "Oliver", "Amelia", "Noah", "Isla", "Jack", "Chloe"]
LAST = ["Smith", "Johnson", "Williams", "Brown", "Jones", "Garcia", "Miller", "Davis", "Wilson",
        "Taylor", "Clark", "Lewis", "Walker", "Hall", "Young", "King", "Wright", "Scott", "Green",
        "Baker", "Adams", "Nelson", "Hill", "Campbell", "Tan", "Lim", "Patel"]

# (weight, locale, timezone, phone maker, currency)
def cn_phone():
    return "+86" + rng.choice(["138", "139", "186", "150", "158", "189", "137"]) + f"{rng.randrange(10**8):08d}"
def us_phone():
    return "+1" + rng.choice(["212", "646", "415", "312", "213", "305"]) + "555" + f"{rng.randrange(100, 200):04d}"
def uk_phone():
    return "+447400" + f"{rng.randrange(10**6):06d}"
def au_phone():
    return "+61491570" + f"{rng.randrange(156, 160):03d}"
def sg_phone():
    return "+65" + rng.choice(["8", "9"]) + f"{rng.randrange(10**7):07d}"

PROFILES = [
    (55, "zh-CN", "Asia/Shanghai", cn_phone, "CNY"),
    (8, "zh-CN", "", cn_phone, "CNY"),
    (10, "en-US", "America/New_York", us_phone, "USD"),
    (6, "en-US", "America/Los_Angeles", us_phone, "USD"),
    (4, "en-US", "America/Chicago", us_phone, "USD"),
    (3, "en-US", "", us_phone, "USD"),
    (6, "en-GB", "Europe/London", uk_phone, "GBP"),
    (4, "en-AU", "Australia/Sydney", au_phone, "AUD"),
    (4, "en", "Asia/Singapore", sg_phone, "SGD"),
]

today = dt.date(2026, 12, 1)
loans, payments = [], []
pay_seq = 1
for b in range(1, 301):
    weights = [p[0] for p in PROFILES]
    _, locale, tz, phone, cur = rng.choices(PROFILES, weights)[0]
    if locale.startswith("zh"):
        name = rng.choice(SURNAMES) + rng.choice(GIVEN) + (rng.choice(GIVEN) if rng.random() < .6 else "")
        email = f"user{b:04d}@example.{rng.choice(['com', 'org', 'net'])}"
    else:
        first, last = rng.choice(FIRST), rng.choice(LAST)
        name = f"{first} {last}"
        email = f"{first.lower()}.{last.lower()}{b}@example.{rng.choice(['com', 'org', 'net'])}"
    has_phone, has_email = True, rng.random() < .85
    if rng.random() < .05:
        has_phone = False
        has_email = True
    phone_number = phone() if has_phone else ""
    n_loans = 1 if rng.random() < .8 else 2
    for k in range(n_loans):
        offset = rng.choice(list(range(-35, 0)) + list(range(0, 25)) + [-1, 0, 1, 3, -3, 7, -7, 15])
        due = today + dt.timedelta(days=offset)
        base = rng.choice([500, 800, 1000, 1500, 2000, 3000, 5000]) if cur in ("CNY",) else rng.choice([150, 200, 300, 450, 600, 900])
        amount = f"{base + rng.randrange(0, 100) + rng.choice([0, 0.5, 0.25, 0.99]):.2f}"
        status = "active"
        r = rng.random()
        if r < .06:
            status = "closed"
        elif r < .09:
            status = "written_off" if offset < -20 else "active"
        loan_id = f"L{b:04d}-{k + 1}"
        loans.append({
            "loan_id": loan_id, "borrower_id": f"B{b:04d}", "name": name,
            "phone": phone_number, "email": email if has_email else "",
            "locale": locale, "timezone": tz, "due_date": due.isoformat(),
            "amount_due": amount, "currency": cur, "status": status,
        })
        if status == "active" and offset < 5:
            p = rng.random()
            paid_day = due + dt.timedelta(days=rng.randrange(-3, 4))
            paid_at = dt.datetime.combine(paid_day, dt.time(rng.randrange(8, 22), rng.randrange(60))).isoformat() + "+08:00"
            if p < .18:  # paid in full
                payments.append({"payment_id": f"P{pay_seq:05d}", "loan_id": loan_id, "amount": amount, "paid_at": paid_at})
                pay_seq += 1
            elif p < .26:  # partial payment: reminders continue
                part = f"{float(amount) / 2:.2f}"
                payments.append({"payment_id": f"P{pay_seq:05d}", "loan_id": loan_id, "amount": part, "paid_at": paid_at})
                pay_seq += 1

with open("loans.csv", "w", newline="", encoding="utf-8") as f:
    w = csv.DictWriter(f, fieldnames=list(loans[0].keys()), lineterminator="\n")
    w.writeheader()
    w.writerows(loans)
with open("payments.csv", "w", newline="", encoding="utf-8") as f:
    w = csv.DictWriter(f, fieldnames=["payment_id", "loan_id", "amount", "paid_at"], lineterminator="\n")
    w.writeheader()
    w.writerows(payments)
with open("loans.jsonl", "w", encoding="utf-8") as f:
    import json
    for row in loans[:20]:
        f.write(json.dumps(row, ensure_ascii=False) + "\n")
print(f"{len(loans)} loans, {len(payments)} payments")
