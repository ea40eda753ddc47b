//! The emails, rendered from the events: the order confirmation from an OrderPlaced, and the
//! backorder notice from an OrderBackordered; each a subject, a plain-text body and an HTML
//! body (every value from an event is HTML-escaped).

use orderflow_events::{Currency, OrderPlaced};
use uuid::Uuid;

/// A rendered confirmation.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Rendered {
    pub to: String,
    pub subject: String,
    pub text: String,
    pub html: String,
    pub message_id: String,
}

/// The Message-ID of the confirmation of the order placed by event `event_id`: the same on
/// every resend, so a receiver can recognise a duplicate.
pub fn message_id(event_id: Uuid) -> String {
    format!("<{event_id}@orderflow>")
}

/// `minor` units of `currency` as a decimal amount with its code: `1999` EUR → `19.99 EUR`.
pub fn money(minor: i64, currency: &Currency) -> String {
    let exponent = u32::from(currency.exponent());
    let code = currency.as_str();
    if exponent == 0 {
        return format!("{minor} {code}");
    }
    let scale = 10i64.pow(exponent);
    let sign = if minor < 0 { "-" } else { "" };
    let (units, cents) = (minor.unsigned_abs() / scale.unsigned_abs(), minor.unsigned_abs() % scale.unsigned_abs());
    format!("{sign}{units}.{cents:0width$} {code}", width = exponent as usize)
}

fn escape(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for c in s.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&#39;"),
            c => out.push(c),
        }
    }
    out
}

/// Render the confirmation of `order`.
pub fn render(order: &OrderPlaced) -> Rendered {
    let order_id = order.order_id.as_str();
    let name = order.customer.name.as_str();
    let currency = &order.currency;
    let subject = format!("Your order {order_id} is confirmed");
    let total = money(order.total_minor.get(), currency);

    let mut text = format!("Hello {name},\n\nthank you for your order {order_id}.\n\n");
    let mut rows = String::new();
    for line in &order.lines {
        let price = money(line.unit_price_minor.get(), currency);
        text.push_str(&format!("  {} x {}  at {price}\n", line.quantity.get(), line.sku.as_str()));
        rows.push_str(&format!(
            "<tr><td>{}</td><td>{}</td><td>{}</td></tr>",
            escape(line.sku.as_str()),
            line.quantity.get(),
            escape(&price)
        ));
    }
    let address = &order.shipping_address;
    let ship_to = format!(
        "{}, {} {}, {}",
        address.line1.as_str(),
        address.postal_code.as_str(),
        address.city.as_str(),
        address.country.as_str()
    );
    text.push_str(&format!("\nTotal: {total}\nShipping to: {ship_to}\n\nWe will let you know when it ships.\n"));
    let html = format!(
        "<!DOCTYPE html><html><body><p>Hello {},</p><p>thank you for your order <strong>{}</strong>.</p>\
         <table><tr><th>SKU</th><th>Quantity</th><th>Unit price</th></tr>{rows}</table>\
         <p>Total: <strong>{}</strong></p><p>Shipping to: {}</p><p>We will let you know when it ships.</p></body></html>",
        escape(name),
        escape(order_id),
        escape(&total),
        escape(&ship_to)
    );
    Rendered {
        to: order.customer.email.as_str().to_owned(),
        subject,
        text,
        html,
        message_id: message_id(order.event_id),
    }
}

/// Render the backorder notice of `order_id` to `to`: which skus wait for how many units.
/// `lines` are `(sku, units missing)`; `event_id` is the OrderBackordered's (its Message-ID).
pub fn render_backorder(order_id: &str, to: &str, lines: &[(String, i64)], event_id: Uuid) -> Rendered {
    let subject = format!("Part of your order {order_id} is backordered");
    let mut text = format!("Hello,\n\nsome items of your order {order_id} are not in stock yet:\n\n");
    let mut rows = String::new();
    for (sku, missing) in lines {
        text.push_str(&format!("  {missing} x {sku}\n"));
        rows.push_str(&format!("<tr><td>{}</td><td>{missing}</td></tr>", escape(sku)));
    }
    text.push_str("\nThey are reserved for you, first ordered first served, and ship as soon as they arrive.\n");
    let html = format!(
        "<!DOCTYPE html><html><body><p>Hello,</p><p>some items of your order <strong>{}</strong> are not in stock yet:</p>\
         <table><tr><th>SKU</th><th>Waiting</th></tr>{rows}</table>\
         <p>They are reserved for you, first ordered first served, and ship as soon as they arrive.</p></body></html>",
        escape(order_id)
    );
    Rendered { to: to.to_owned(), subject, text, html, message_id: message_id(event_id) }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn money_uses_the_currency_exponent() {
        assert_eq!(money(1999, &Currency::parse("EUR").unwrap()), "19.99 EUR");
        assert_eq!(money(5, &Currency::parse("EUR").unwrap()), "0.05 EUR");
        assert_eq!(money(1999, &Currency::parse("JPY").unwrap()), "1999 JPY");
        assert_eq!(money(1999, &Currency::parse("KWD").unwrap()), "1.999 KWD");
    }

    #[test]
    fn html_escapes_values_from_the_event() {
        assert_eq!(escape("<b>Ada & \"Bob\"</b>"), "&lt;b&gt;Ada &amp; &quot;Bob&quot;&lt;/b&gt;");
    }
}
