"""30 questions over the demo sales database (`manage.py seed_demo_database`), each with the gold SQL whose result
set is the right answer (bench/text_to_sql.py runs it on the database to get that result)."""

QUESTIONS: list[tuple[str, str]] = [
    ("How many sales are there?", "SELECT COUNT(*) FROM sales"),
    ("What is the total revenue of all sales?", "SELECT SUM(amount) FROM sales"),
    ("What is the total revenue of each product?", "SELECT product, SUM(amount) FROM sales GROUP BY product"),
    ("What is the total revenue of each region?", "SELECT region, SUM(amount) FROM sales GROUP BY region"),
    (
        "Which product has the highest total revenue?",
        "SELECT product FROM sales GROUP BY product ORDER BY SUM(amount) DESC LIMIT 1",
    ),
    (
        "Which region has the lowest total revenue?",
        "SELECT region FROM sales GROUP BY region ORDER BY SUM(amount) ASC LIMIT 1",
    ),
    ("How many sales of Tea were made?", "SELECT COUNT(*) FROM sales WHERE product = 'Tea'"),
    ("What is the average sale amount?", "SELECT AVG(amount) FROM sales"),
    ("What is the largest single sale amount?", "SELECT MAX(amount) FROM sales"),
    ("How many sales were made in the North region?", "SELECT COUNT(*) FROM sales WHERE region = 'North'"),
    (
        "What was the total revenue in January 2026?",
        "SELECT SUM(amount) FROM sales WHERE sold_on >= '2026-01-01' AND sold_on < '2026-02-01'",
    ),
    ("How many products are there?", "SELECT COUNT(*) FROM products"),
    ("Which products are in the Hot drinks category?", "SELECT name FROM products WHERE category = 'Hot drinks'"),
    ("What is the unit price of Coffee?", "SELECT unit_price FROM products WHERE name = 'Coffee'"),
    ("Who manages the South region?", "SELECT manager FROM regions WHERE name = 'South'"),
    ("In which city is the head office of the East region?", "SELECT head_office FROM regions WHERE name = 'East'"),
    ("Which product was launched most recently?", "SELECT name FROM products ORDER BY launched_on DESC LIMIT 1"),
    (
        "What is the total revenue of hot drinks?",
        "SELECT SUM(s.amount) FROM sales s JOIN products p ON p.name = s.product WHERE p.category = 'Hot drinks'",
    ),
    (
        "What is the total revenue of each product category?",
        "SELECT p.category, SUM(s.amount) FROM sales s JOIN products p ON p.name = s.product GROUP BY p.category",
    ),
    (
        "What is the total revenue of each regional manager?",
        "SELECT r.manager, SUM(s.amount) FROM sales s JOIN regions r ON r.name = s.region GROUP BY r.manager",
    ),
    (
        "What is the total target of the West region?",
        "SELECT SUM(target_amount) FROM region_targets WHERE region = 'West'",
    ),
    (
        "What is the North region's target for March 2026?",
        "SELECT target_amount FROM region_targets WHERE region = 'North' AND month = '2026-03-01'",
    ),
    (
        "Which region has the highest total target?",
        "SELECT region FROM region_targets GROUP BY region ORDER BY SUM(target_amount) DESC LIMIT 1",
    ),
    ("How many sales had an amount over 30 euros?", "SELECT COUNT(*) FROM sales WHERE amount > 30"),
    ("What is the average amount of Juice sales?", "SELECT AVG(amount) FROM sales WHERE product = 'Juice'"),
    (
        "How many different products were sold in the East region?",
        "SELECT COUNT(DISTINCT product) FROM sales WHERE region = 'East'",
    ),
    ("On which day was the first sale?", "SELECT MIN(sold_on) FROM sales"),
    (
        "How many Coffee sales were made in each region?",
        "SELECT region, COUNT(*) FROM sales WHERE product = 'Coffee' GROUP BY region",
    ),
    (
        "What is the total revenue of Cocoa in the West region?",
        "SELECT SUM(amount) FROM sales WHERE product = 'Cocoa' AND region = 'West'",
    ),
    (
        "In which months did the South region's revenue exceed its target?",
        "WITH monthly AS (SELECT date_trunc('month', sold_on)::date AS month, SUM(amount) AS revenue FROM sales "
        "WHERE region = 'South' GROUP BY 1) SELECT t.month FROM region_targets t JOIN monthly m ON m.month = t.month "
        "WHERE t.region = 'South' AND m.revenue > t.target_amount",
    ),
]
