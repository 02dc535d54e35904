//! Market maker protection through the API: set, fired by fills (the
//! user's orders in the market canceled, an `mmpTriggered` event on the
//! user data stream, new orders refused while frozen), reset, removed, and
//! kept across a crash; bad settings get Binance-style errors.

mod common;

use common::account::{create_user, signed, User};
use common::ws::Ws;
use common::{Client, Server, ADMIN_TOKEN};
use serde_json::{json, Value};

fn bid(c: &mut Client, user: &User, price: &str, qty: &str) -> (u16, Value) {
    let query = format!("symbol=BTCUSDT&side=BUY&type=LIMIT&timeInForce=GTC&quantity={qty}&price={price}");
    let r = signed(c, user, "POST", "/api/v3/order", &query);
    (r.status, r.json())
}

fn call(c: &mut Client, user: &User, method: &str, path: &str, query: &str) -> (u16, Value) {
    let r = signed(c, user, method, path, query);
    (r.status, r.json())
}

const SETTINGS: &str =
    "symbol=BTCUSDT&windowTimeInMilliseconds=60000&frozenTimeInMilliseconds=0&qtyLimit=1.5&deltaLimit=100";

#[test]
fn a_protection_fires_freezes_thaws_and_survives_a_crash() {
    let data_dir = common::temp_data_dir();
    let args = ["--admin-token", ADMIN_TOKEN];
    let mut server = Server::start_in(&data_dir, 2, &args);
    let maker = create_user(&server, "mmp-maker", &[("USDT", "1000000")]);
    let taker = create_user(&server, "mmp-taker", &[("BTC", "10")]);
    let mut c = server.connect();

    let invalid = |name: &str| json!({"code": -1130, "msg": format!("Data sent for parameter '{name}' is not valid.")});
    let refusals = [
        (
            SETTINGS.replace("windowTimeInMilliseconds=60000", "windowTimeInMilliseconds=0"),
            invalid("windowTimeInMilliseconds"),
        ),
        (SETTINGS.replace("qtyLimit=1.5", "qtyLimit=0"), invalid("qtyLimit")),
        (
            SETTINGS.replace("&deltaLimit=100", ""),
            json!({"code": -1102, "msg": "Mandatory parameter 'deltaLimit' was not sent, was empty/null, or malformed."}),
        ),
        (
            SETTINGS.replace("qtyLimit=1.5", "qtyLimit=x"),
            json!({"code": -1100, "msg": "Illegal characters found in parameter 'qtyLimit'."}),
        ),
    ];
    for (query, error) in refusals {
        assert_eq!(
            call(&mut c, &maker, "POST", "/api/v3/mmpSet", &query),
            (400, error),
            "{query}"
        );
    }
    let none = call(&mut c, &maker, "GET", "/api/v3/mmp", "symbol=BTCUSDT");
    assert_eq!(
        none,
        (
            400,
            json!({"code": -2013, "msg": "No market maker protection is set for this symbol."})
        )
    );
    let set = call(&mut c, &maker, "POST", "/api/v3/mmpSet", SETTINGS);
    let status = json!({"symbol": "BTCUSDT", "windowTimeInMilliseconds": 60000, "frozenTimeInMilliseconds": 0,
        "qtyLimit": "1.50000000", "deltaLimit": "100.00000000", "frozenUntil": 0});
    assert_eq!(set, (200, status.clone()));

    // A crash keeps the setting.
    server.kill9();
    let server = Server::start_in(&data_dir, 2, &args);
    let mut c = server.connect();
    assert_eq!(
        call(&mut c, &maker, "GET", "/api/v3/mmp", "symbol=BTCUSDT"),
        (200, status)
    );

    c.send(&format!(
        "POST /api/v3/userDataStream HTTP/1.1\r\nHost: t\r\nX-MBX-APIKEY: {}\r\n\r\n",
        maker.key
    ));
    let key = c.response().json()["listenKey"]
        .as_str()
        .expect("listenKey")
        .to_string();
    let mut stream = Ws::connect(server.addr, &format!("/ws/{key}"));
    for price in ["30000", "29999", "29998"] {
        assert_eq!(bid(&mut c, &maker, price, "1").0, 200);
    }
    // 2 sold into the bids: past 1.5, the protection fires.
    let sell = "symbol=BTCUSDT&side=SELL&type=LIMIT&timeInForce=GTC&quantity=2&price=29999";
    assert_eq!(call(&mut c, &taker, "POST", "/api/v3/order", sell).0, 200);
    let fired = loop {
        let event = stream.json();
        if event["e"] == "mmpTriggered" {
            break event;
        }
    };
    assert_eq!((&fired["s"], &fired["frozenUntil"]), (&json!("BTCUSDT"), &json!(-1)));
    assert!(
        common::eventually(common::ws::WAIT, || {
            let open = call(&mut c, &maker, "GET", "/api/v3/openOrders", "symbol=BTCUSDT").1;
            open.as_array().is_some_and(Vec::is_empty)
        }),
        "the protected user's orders were not canceled"
    );
    let frozen = json!({"code": -2010,
        "msg": "Market maker protection is frozen for this symbol; new orders are refused until it thaws or is reset."});
    assert_eq!(bid(&mut c, &maker, "29000", "1"), (400, frozen));
    assert_eq!(
        call(&mut c, &maker, "GET", "/api/v3/mmp", "symbol=BTCUSDT").1["frozenUntil"],
        json!(-1)
    );
    // A reset thaws; a removal ends it.
    let reset = call(&mut c, &maker, "POST", "/api/v3/mmpReset", "symbol=BTCUSDT");
    assert_eq!((reset.0, &reset.1["frozenUntil"]), (200, &json!(0)));
    assert_eq!(bid(&mut c, &maker, "29000", "1").0, 200);
    assert_eq!(
        call(&mut c, &maker, "DELETE", "/api/v3/mmp", "symbol=BTCUSDT"),
        (200, json!({}))
    );
    assert_eq!(call(&mut c, &maker, "GET", "/api/v3/mmp", "symbol=BTCUSDT").0, 400);
    drop(server);
}
