"""The HTML of Bookinfo's product page, with the same version markers as the Tailwind template.

What clients grep for: a stars block `<div class="flex gap-x-1 text-{color}-500">` holding *stars*
filled `<svg id="glyphicon glyphicon-star" …>` and 5 − *stars* outline ones (so v2 shows
`text-black-500`, v3 `text-red-500`, v1 no stars at all), the "Ratings service is currently unavailable"
paragraph when ratings failed, and `Reviews served by:` followed by the reviews podname.
"""

from __future__ import annotations

from html import escape
from typing import Any

TITLE = "The Comedy of Errors"
DESCRIPTION_HTML = (
    '<a href="https://en.wikipedia.org/wiki/The_Comedy_of_Errors">Wikipedia Summary</a>: The Comedy of Errors '
    "is one of <b>William Shakespeare's</b> early plays. It is his shortest and one of his most farcical "
    "comedies, with a major part of the humour coming from slapstick and mistaken identity, in addition to "
    "puns and word play."
)
PRODUCTS = [{"id": 0, "title": TITLE, "descriptionHtml": DESCRIPTION_HTML}]

_STAR_POINTS = "12,2.5 14.9,8.7 21.5,9.3 16.5,13.7 18,20.3 12,16.8 6,20.3 7.5,13.7 2.5,9.3 9.1,8.7"
FILLED_STAR = ('<svg id="glyphicon glyphicon-star" xmlns="http://www.w3.org/2000/svg" viewBox="0 0 24 24" '
               f'fill="currentColor" class="w-6 h-6"><polygon points="{_STAR_POINTS}"/></svg>')
OUTLINE_STAR = ('<svg xmlns="http://www.w3.org/2000/svg" viewBox="0 0 24 24" fill="none" stroke="currentColor" '
                f'stroke-width="1.5" class="w-6 h-6"><polygon points="{_STAR_POINTS}"/></svg>')

# The few utility classes the page uses, inlined so the page renders without /static assets.
_STYLE = """
body{font-family:system-ui,sans-serif;margin:0;color:#111}
nav{display:flex;justify-content:space-between;align-items:center;padding:.75rem 1.5rem;background:#1f2937;color:#fff}
nav a{color:#fff}
main{max-width:64rem;margin:0 auto;padding:1.5rem}
.grid{display:grid;grid-template-columns:1fr 1fr;gap:2rem}
.flex{display:flex}.gap-x-1{column-gap:.25rem}.w-6{width:1.5rem}.h-6{height:1.5rem}
.text-black-500{color:#000}.text-red-500{color:#ef4444}
blockquote{margin:1rem 0 .25rem;font-style:italic}
"""


def _h(value: Any) -> str:
    return escape(str(value), quote=True)


def render_login(user: str | None) -> str:
    if user:
        return (f'<div><span>Signed in as <b>{_h(user)}</b></span> '
                '<a href="logout" class="ml-2 underline">Sign out</a></div>')
    return ('<form method="post" action="login" class="flex gap-x-1">'
            '<input type="text" name="username" placeholder="User Name">'
            '<input type="password" name="passwd" placeholder="Password">'
            '<button type="submit">Sign in</button></form>')


def render_details(status: int, details: dict[str, Any]) -> str:
    if status != 200:
        return ('<h4 class="text-2xl">Error fetching product details</h4>\n'
                f'<p class="text-red-500">{_h(details.get("error", ""))}</p>')
    rows = (("Type", "type"), ("Pages", "pages"), ("Publisher", "publisher"), ("Language", "language"),
            ("ISBN-10", "ISBN-10"), ("ISBN-13", "ISBN-13"))
    body = "\n".join(f"<tr><th>{label}:</th><td>{_h(details.get(key, ''))}</td></tr>" for label, key in rows)
    return f'<h4 class="text-2xl">Book Details</h4>\n<table>\n{body}\n</table>'


def render_rating(rating: Any) -> str:
    if not isinstance(rating, dict):
        return ""
    if "stars" in rating:
        try:
            stars = max(0, min(5, int(rating["stars"])))
        except (TypeError, ValueError):
            return ""
        color = _h(rating.get("color", "black"))
        return (f'<div class="flex gap-x-1 text-{color}-500">'
                + FILLED_STAR * stars + OUTLINE_STAR * (5 - stars) + "</div>")
    if "error" in rating:
        return f'<p class="text-red-500">{_h(rating["error"])}</p>'
    return ""


def render_reviews(status: int, reviews: dict[str, Any]) -> str:
    if status != 200:
        return ('<h4 class="text-2xl">Error fetching product reviews</h4>\n'
                f'<p class="text-red-500">{_h(reviews.get("error", ""))}</p>')
    parts = ['<h4 class="text-2xl">Book Reviews</h4>']
    for review in reviews.get("reviews") or []:
        if not isinstance(review, dict):
            continue
        parts.append('<div class="review">')
        rating = render_rating(review.get("rating"))
        if rating:
            parts.append(rating)
        parts.append(f'<blockquote class="text-lg"><p>"{_h(review.get("text", ""))}"</p></blockquote>')
        parts.append(f'<p class="text-sm">— {_h(review.get("reviewer", ""))}</p>')
        parts.append("</div>")
    served = _h(reviews.get("podname", ""))
    clustername = reviews.get("clustername", "null")
    if clustername != "null":
        served += f" on cluster <div>{_h(clustername)}</div>"
    parts.append(f"<dl><dt>Reviews served by:</dt>\n<dd>{served}</dd></dl>")
    return "\n".join(parts)


def render_productpage(user: str | None, details: tuple[int, dict[str, Any]],
                       reviews: tuple[int, dict[str, Any]]) -> str:
    return f"""<!DOCTYPE html>
<html>
<head>
<meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<title>Simple Bookstore App</title>
<style>{_STYLE}</style>
</head>
<body>
<nav><a href="#">BookInfo Sample</a>
{render_login(user)}
</nav>
<main>
<h1 class="text-3xl font-bold">{TITLE}</h1>
<p>{DESCRIPTION_HTML}</p>
<div class="grid">
<section>
{render_details(*details)}
</section>
<section>
{render_reviews(*reviews)}
</section>
</div>
</main>
</body>
</html>
"""


def render_index() -> str:
    return f"""<!DOCTYPE html>
<html>
<head><meta charset="utf-8"><title>Simple Bookstore App</title><style>{_STYLE}</style></head>
<body>
<main>
<h3>Hello! This is a simple bookstore application consisting of three services as shown below</h3>
<table>
<tr><th>name</th><td>http://details:9080</td></tr>
<tr><th>endpoint</th><td>details</td></tr>
<tr><th>children</th><td>(none)</td></tr>
<tr><th>name</th><td>http://reviews:9080</td></tr>
<tr><th>endpoint</th><td>reviews</td></tr>
<tr><th>children</th><td>http://ratings:9080 (ratings)</td></tr>
</table>
<p>Click on one of the links below to auto generate a request to the backend as a real user or a tester</p>
<p><a href="/productpage?u=normal">Normal user</a></p>
<p><a href="/productpage?u=test">Test user</a></p>
</main>
</body>
</html>
"""
