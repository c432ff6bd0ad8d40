-- docker-compose lab: users on the primary. LAB-ONLY CREDENTIALS.
-- Written to the binlog on purpose: the replica starts from an empty GTID
-- position and replays this, so both servers get the same users and data.
SET SESSION sql_log_bin = 1;
CREATE USER 'repl'@'%' IDENTIFIED BY 'repl-secret';
GRANT REPLICATION SLAVE ON *.* TO 'repl'@'%';
CREATE USER 'remora'@'%' IDENTIFIED BY 'remora-secret';
-- Everything remora needs on MariaDB 10.5+ (REPLICATION CLIENT is not enough).
GRANT SLAVE MONITOR ON *.* TO 'remora'@'%';
GRANT SELECT ON heartbeat.* TO 'remora'@'%';
CREATE DATABASE lab;
CREATE TABLE lab.ticks (
  id BIGINT AUTO_INCREMENT PRIMARY KEY,
  at TIMESTAMP(6) NOT NULL DEFAULT CURRENT_TIMESTAMP(6)
);
CREATE TABLE lab.conflict (id INT PRIMARY KEY);
